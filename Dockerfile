# The image every KubeRay manifest in deploy/kuberay/ runs: the project and its locked dependencies, nothing else.
#   docker build -t mediascore:0.1 .
# The lock pins the CPU build of torch (see the Makefile). For GPU nodes build with TORCH_INDEX set to a CUDA
# wheel index of the same torch version, e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128:
# torch comes from there first, and everything else from the lock as CI tested it.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0

# OpenCV's wheel needs these two shared libraries; PyAV and ONNX Runtime bring their own.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN python -m pip install "$(grep '^pip==' requirements.lock)" \
    && python -m pip install --index-url "$TORCH_INDEX" "$(grep '^torch==' requirements.lock)" \
    && python -m pip install -r requirements.lock

COPY jobs/ jobs/
COPY models/ models/
COPY serve/ serve/
COPY configs/ configs/
COPY checkpoints/ checkpoints/
COPY README.md ./
RUN python -m pip install --no-deps --no-build-isolation -e . && mediascore --help > /dev/null

# KubeRay starts Ray itself (ray start ... from the pod's command); the working directory holds the project, so the
# configs and checkpoints named by relative paths resolve as they do in a checkout.
CMD ["mediascore", "--help"]
