"""img2video: turn an image dropped in S3 into a Novita VIDU Q2 Turbo video."""
