"""The one error hierarchy of rsir.

Library code raises these; the CLI prints them and the service maps them to HTTP status codes in a
single handler, so every class says which kind of failure it is (the caller's input, or our state).
"""


class RsirError(Exception):
    """Base class of every error rsir raises on purpose."""


class InvalidInputError(RsirError, ValueError):
    """The caller gave something unusable: bad shapes, empty queries, out-of-range parameters."""


class ImageDecodeError(InvalidInputError):
    """A file or upload is not a decodable image (truncated, wrong format, too large...)."""


class ImageTooLargeError(ImageDecodeError):
    """An image with more pixels than the decoder is allowed to expand (or a decompression bomb)."""


class UnsupportedImageError(ImageDecodeError):
    """Bytes that are not an image in any format rsir decodes."""


class CheckpointError(RsirError):
    """A model checkpoint is missing, unreadable, or does not fit the requested architecture."""


class UnsupportedModelError(RsirError):
    """The open_clip architecture cannot give what rsir needs (e.g. its towers expose no tokens)."""


class DatasetError(RsirError):
    """A caption/dataset file is malformed or refers to images that are not there."""
