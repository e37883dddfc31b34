"""Infrastructure every command shares: typed config, storage, the Ray session, the embedded S3 server."""
