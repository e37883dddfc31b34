import io

import numpy as np
import pytest
import skimage.data

from jobs.common import storage
from jobs.common.config import ObjectsConfig
from jobs.media.detect import (
    Detections,
    ModelDetector,
    OpenCVDetector,
    box_iou,
    build_detector,
    detect,
    nms,
    postprocess,
)
from jobs.media.images import fit_within as downscale

ASTRONAUT_FACE = (173, 68, 273, 168)  # drawn on the image and checked by eye (see jobs/eval/objects.py)


@pytest.fixture(scope="module")
def opencv() -> OpenCVDetector:
    return OpenCVDetector(ObjectsConfig())


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1, 50 / 150, 0], [0, 0, 0]])


def test_nms_keeps_the_best_of_each_cluster_highest_first():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.95])
    # box 3 (0.95) suppresses box 0 (IoU 50/100); box 1 overlaps box 3 with IoU 36/114 = 0.32: kept at 0.4 ...
    assert nms(boxes, scores, 0.4).tolist() == [3, 1, 2]
    assert nms(boxes, scores, 0.3).tolist() == [3, 2]  # ... dropped at 0.3
    assert nms(boxes[:0], scores[:0], 0.4).tolist() == []
    # an IoU equal to the threshold is kept; above it is dropped
    half = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    assert nms(half, np.array([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(half, np.array([0.9, 0.8]), 0.49).tolist() == [0]


def test_postprocess_threshold_size_per_label_nms_and_cap():
    boxes = [[0, 0, 50, 50], [0, 0, 50, 50], [2, 2, 52, 52], [100, 100, 110, 140], [200, 0, 260, 60], [0, 200, 40, 240]]
    dets = Detections.make(boxes, [0.9, 0.8, 0.85, 0.99, 0.2, 0.5], [0, 1, 0, 0, 0, 1])
    cfg = ObjectsConfig(score_threshold=0.3, min_size=24, nms_iou=0.4, max_objects=16)
    out = postprocess(dets, cfg)
    # 3: 10 px wide, under min_size; 4: score 0.2; 2 suppressed by 0 (same label); 1 kept (other label)
    np.testing.assert_allclose(out.scores, [0.9, 0.8, 0.5])
    assert out.labels.tolist() == [0, 1, 1]
    capped = postprocess(dets, cfg.model_copy(update={"max_objects": 2}))
    np.testing.assert_allclose(capped.scores, [0.9, 0.8])
    assert len(postprocess(Detections.empty(), cfg)) == 0


class _Recorder:
    """A detector that reports one box in the pixels of the image it is given."""

    labels = ["face"]
    version = "recorder"

    def __init__(self, box):
        self.box, self.seen, self.min_size = box, None, None

    def detect(self, image: np.ndarray, min_size: int = 1) -> Detections:
        self.seen, self.min_size = image.shape, min_size
        return Detections.make([self.box], [0.9], [0])


def test_large_images_are_scaled_down_and_boxes_mapped_back():
    image = np.zeros((1000, 2000, 3), np.uint8)
    small, scale = downscale(image, 500)
    assert small.shape == (250, 500, 3) and scale == 0.25
    recorder = _Recorder((10, 20, 110, 70))
    out = detect(recorder, image, ObjectsConfig(max_side=500, min_size=40))
    assert recorder.seen == (250, 500, 3) and recorder.min_size == 10
    np.testing.assert_allclose(out.boxes, [[40, 80, 440, 280]])
    same = detect(_Recorder((10, 20, 110, 70)), image[:400, :400], ObjectsConfig(max_side=500, min_size=1))
    np.testing.assert_allclose(same.boxes, [[10, 20, 110, 70]])
    # boxes reaching past the image are clipped to it
    clipped = detect(_Recorder((-5, -5, 3000, 3000)), image, ObjectsConfig(max_side=500))
    np.testing.assert_allclose(clipped.boxes, [[0, 0, 2000, 1000]])


def test_opencv_finds_the_astronauts_face(opencv):
    out = detect(opencv, skimage.data.astronaut(), ObjectsConfig())
    faces = out.boxes[out.labels == opencv.labels.index("face")]
    assert box_iou(faces, np.array([ASTRONAUT_FACE])).max() >= 0.5
    assert np.all(out.scores >= 0.3) and np.all(np.diff(out.scores) <= 0)
    assert opencv.version.startswith("opencv-") and "haarcascade_frontalface_default" in opencv.version


def test_a_flat_image_has_no_faces_or_persons(opencv):
    assert len(detect(opencv, np.full((480, 640, 3), (90, 140, 200), np.uint8), ObjectsConfig())) == 0


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.full((10, 300, 3), 255, np.uint8),
        np.repeat(skimage.data.camera()[:, :, None], 3, axis=2),  # grey converted to RGB
        np.random.default_rng(0).integers(0, 256, (130, 70, 3), dtype=np.uint8),  # just over the HOG window
    ],
    ids=["1x1", "thin", "grey-as-rgb", "noise"],
)
def test_odd_images_do_not_crash(opencv, image):
    out = detect(opencv, image, ObjectsConfig())
    assert out.boxes.shape == (len(out), 4) and out.labels.dtype == np.int64
    assert np.all((out.boxes >= 0) & (out.boxes <= [image.shape[1], image.shape[0]] * 2))


def test_opencv_rejects_bad_input_and_unknown_labels(opencv):
    with pytest.raises(ValueError, match="RGB uint8"):
        detect(opencv, np.zeros((32, 32), np.uint8), ObjectsConfig())
    with pytest.raises(ValueError, match="car"):
        OpenCVDetector(ObjectsConfig(labels=["face", "car"]))
    faces_only = OpenCVDetector(ObjectsConfig(labels=["face"]))
    assert faces_only.labels == ["face"] and "person" not in faces_only.version


def _torchscript_bytes(label: int = 1) -> bytes:
    import torch

    class Centre(torch.nn.Module):
        """One box over the middle half of the input, scored by the image's mean brightness."""

        def __init__(self, label: int):
            super().__init__()
            self.label = label

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            h, w = x.shape[2], x.shape[3]
            box = torch.tensor([[w * 0.25, h * 0.25, w * 0.75, h * 0.75]], dtype=torch.float32)
            return box, x.mean().reshape(1), torch.full((1,), self.label, dtype=torch.int64)

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Centre(label)), buf)
    return buf.getvalue()


def test_torchscript_detector_loaded_from_s3(s3):
    uri = "s3://test-models/detect/centre.pt"
    storage.ensure_bucket(uri)
    storage.write_bytes(uri, _torchscript_bytes())
    cfg = ObjectsConfig(detector="torchscript", model=uri, labels=["face", "person"], max_side=1000)
    detector = build_detector(cfg)
    assert isinstance(detector, ModelDetector) and detector.version.startswith(f"torchscript:{uri}#sha1=")
    out = detect(detector, np.full((1000, 2000, 3), 255, np.uint8), cfg)  # the model sees 500 x 1000
    np.testing.assert_allclose(out.boxes, [[500, 250, 1500, 750]])
    np.testing.assert_allclose(out.scores, [1.0])
    assert out.labels.tolist() == [1]
    assert len(detect(detector, np.zeros((100, 200, 3), np.uint8), cfg)) == 0  # score 0, under the threshold
    storage.write_bytes(uri, _torchscript_bytes(label=5))
    with pytest.raises(ValueError, match=r"outside stages\.objects\.labels"):
        detect(build_detector(cfg), np.full((100, 200, 3), 255, np.uint8), cfg)


def test_model_detector_needs_a_model():
    with pytest.raises(ValueError, match=r"stages\.objects\.model"):
        build_detector(ObjectsConfig(detector="onnx"))


# A hand-written ONNX file (the `onnx` package, which torch.onnx.export needs, is not installed): protobuf wire
# format for ModelProto, with the field numbers of onnx.proto.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray) -> bytes:
    elem = {np.float32: 1, np.int64: 7}[array.dtype.type]
    dims = b"".join(_field(1, d) for d in array.shape)
    return dims + _field(2, elem) + _field(8, name) + _field(9, array.tobytes())


def _node(op: str, inputs: list[str], outputs: list[str], attrs: bytes = b"") -> bytes:
    return b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op) + attrs


def _constant(output: str, array: np.ndarray) -> bytes:
    return _node(
        "Constant", [], [output], _field(5, _field(1, "value") + _field(5, _tensor(output, array)) + _field(20, 4))
    )


def _value_info(name: str, elem: int, dims: list[int | str]) -> bytes:
    shape = b"".join(_field(1, _field(1, d) if isinstance(d, int) else _field(2, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _field(1, elem) + _field(2, shape)))


def _onnx_bytes() -> bytes:
    """A detector of the contract: one box (4, 4, 20, 12), scored by the brightest pixel, label 0. Its outputs
    are declared in another order than the contract's, so the loader must pick them by name."""
    nodes = [
        _constant("boxes", np.array([[4, 4, 20, 12]], np.float32)),
        _node("ReduceMax", ["image"], ["peak"], _field(5, _field(1, "keepdims") + _field(3, 0) + _field(20, 2))),
        _constant("one", np.array([1], np.int64)),
        _node("Reshape", ["peak", "one"], ["scores"]),
        _constant("labels", np.array([0], np.int64)),
    ]
    graph = b"".join(_field(1, n) for n in nodes) + _field(2, "detector")
    graph += _field(11, _value_info("image", 1, [1, 3, "H", "W"]))
    for name, elem, dims in (("scores", 1, [1]), ("labels", 7, [1]), ("boxes", 1, [1, 4])):
        graph += _field(12, _value_info(name, elem, dims))
    return _field(1, 8) + _field(2, "mediascore-test") + _field(7, graph) + _field(8, _field(2, 13))


def test_onnx_detector_loaded_from_s3(s3):
    uri = "s3://test-models/detect/box.onnx"
    storage.ensure_bucket(uri)
    storage.write_bytes(uri, _onnx_bytes())
    cfg = ObjectsConfig(detector="onnx", model=uri, labels=["face"], min_size=4)
    detector = build_detector(cfg)
    image = np.zeros((32, 48, 3), np.uint8)
    assert len(detect(detector, image, cfg)) == 0  # black: score 0
    image[5, 5] = (0, 255, 0)
    out = detect(detector, image, cfg)
    np.testing.assert_allclose(out.boxes, [[4, 4, 20, 12]])
    np.testing.assert_allclose(out.scores, [1.0])
    assert out.labels.tolist() == [0] and detector.version.startswith("onnx:")
