"""Errors raised for bad Kaldi input, and the shell-pipe guard every reader uses.

Every message names the file (and, where there is one, the utterance) and says what was expected, so that a user can
fix the input without reading a traceback from inside a C++ library.
"""

from __future__ import annotations


class KaldiDataError(ValueError):
    """Bad data in a Kaldi file or data directory: wrong shape, missing entry, mismatch between files."""


class KaldiFormatError(KaldiDataError):
    """A file is not in the Kaldi format it should be in (not a model, truncated archive, bad header)."""


def where(path: object, utterance: str | None = None, line: int | None = None) -> str:
    """Formats a location for an error message.

    Args:
        path: The file.
        utterance: The utterance (or other key) concerned, if any.
        line: The 1-based line number in ``path``, if any.

    Returns:
        Text like ``"data/train/feats.scp line 3, utterance 'spk1-utt2'"``.

    Example:
        >>> where("feats.scp", "utt1", 3)
        "feats.scp line 3, utterance 'utt1'"
    """
    text = str(path)
    if line is not None:
        text += f" line {line}"
    if utterance is not None:
        text += f", utterance {utterance!r}"
    return text


def is_pipe(spec: str) -> bool:
    """Tells whether a Kaldi rxfilename / scp entry is a shell command (starts or ends with ``|``).

    Example:
        >>> is_pipe("gunzip -c ali.1.gz |"), is_pipe("feats.ark:12")
        (True, False)
    """
    stripped = spec.strip()
    return stripped.startswith("|") or stripped.endswith("|")


def refuse_pipe(spec: str, *, allow_pipes: bool, source: str) -> None:
    """Raises unless ``spec`` is a plain file reference or the caller opted in to shell pipes.

    Kaldi (and ``kaldi_native_io``) runs an entry that starts or ends with ``|`` as a shell command. Reading a data
    directory must never run commands by surprise, so pipes are refused unless ``allow_pipes=True``.

    Args:
        spec: The entry (an scp value, an rspecifier's filename, a ``wav.scp`` value).
        allow_pipes: The user's explicit opt-in.
        source: Where the entry comes from (see :func:`where`), for the message.

    Raises:
        KaldiDataError: If ``spec`` is a pipe and pipes are not allowed.

    Example:
        >>> refuse_pipe("feats.ark:12", allow_pipes=False, source="feats.scp line 1")
        >>> refuse_pipe("sox a.wav -t wav - |", allow_pipes=False, source="wav.scp line 1")
        Traceback (most recent call last):
        ...
        lightning_rectifier.data.errors.KaldiDataError: wav.scp line 1: 'sox a.wav -t wav - |' is a shell command ...
    """
    if is_pipe(spec) and not allow_pipes:
        raise KaldiDataError(
            f"{source}: {spec.strip()!r} is a shell command (it starts or ends with '|'), which Kaldi would run."
            " Shell commands are refused by default; pass allow_pipes=True (--data.allow_pipes true) to run them,"
            " or write the data to a file first."
        )
