"""Exception types. Every error caused by bad input is a :class:`BslError`."""


class BslError(Exception):
    """Base class of every error bslcodec raises for bad input or a bad file."""


class FormatError(BslError):
    """The bytes are not a valid ``.bsl`` file (bad magic, bad header, bad offsets, bad payload)."""


class ChecksumError(FormatError):
    """A checksum does not match: the file was corrupted."""


class LimitError(FormatError):
    """A size or count is over a documented limit (see ``bslcodec.container.limits``)."""


class EncodeError(BslError):
    """The input cannot be encoded as asked (wrong dtype, NaN in a lossy tensor, bad options)."""


class QualityWarning(UserWarning):
    """The file was written as asked, but its weights are far from the original: e.g. ``bits=`` so low that
    the relative L2 error of the quantized weights is above ``bslcodec.pipeline.allocation.WARN_REL_ERROR``."""
