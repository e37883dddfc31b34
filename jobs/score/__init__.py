"""The score pipeline: listing and decoding inputs, the stages, the writer and commit log, the HTML report."""
