"""s3mount: mount an S3 bucket as a local filesystem, in s3fs's on-bucket format."""

__version__ = "0.1.0"
