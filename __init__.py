"""leadflow: self-hosted lead intake — mail and web forms in, scored and assigned leads out."""

__version__ = "0.1.0"
