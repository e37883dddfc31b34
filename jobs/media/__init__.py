"""Ray-free engines over bytes and pixels, shared by stages, jobs and serve: decode, images, video encoding, OCR,
detectors, degradations, the text encoder, the restorer and the quality judge."""
