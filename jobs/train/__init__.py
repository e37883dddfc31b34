"""The Ray Train jobs (CAM localizer, fusion scorer, restoration GAN, quality classifier) on one harness."""
