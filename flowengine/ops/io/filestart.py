"""Where a file's audio really starts and whether its last frame is whole: read from the
file's first and last bytes when it is opened, never per packet.

- `audio_start`: garbage before a WAV, FLAC, Ogg or MP3 stream. FFmpeg does not find a
  WAV or Ogg file behind it at all, and skips it in an MP3 without a word (missing the
  Xing/Info frame, so the file decodes without its gapless trim: longer, and shifted).
  The reader opens such a file at the offset found here (FFmpeg's skip_initial_bytes).
- `cut_mp3_frame`: the byte of an MP3 file's last frame when the file ends inside it
  (FFmpeg's decoder would conceal the missing bytes as silence, without an error).
- `cut_ogg_page`: the byte of an Ogg file's last page when the file ends inside it
  (FFmpeg's demuxer drops it without an error).
- `wav_data_frames`: the sample frames a WAV file's data chunk announces (FFmpeg states
  the length of what the file holds, not of what its header says it should).
"""

from __future__ import annotations

import os

from flowengine.ops.codecs.decoder_headers import id3v2_length, mp3_frame_length, same_stream

__all__ = ["audio_start", "cut_mp3_frame", "cut_ogg_page", "wav_data_frames", "SCAN_BYTES"]

SCAN_BYTES = 1 << 20        # how far into a file garbage before the audio is looked for
_TAIL_BYTES = 6000          # four of the longest MP3 frames (1441 bytes)
_SIGNATURES = {"wav": (b"RIFF", b"RF64", b"BW64"), "flac": (b"fLaC",), "ogg": (b"OggS",)}


def audio_start(path: str, format_name: str) -> int:
    """The offset of the first byte of the `format_name` stream in `path`: 0 unless garbage
    precedes it; 0 too when no stream start is found (FFmpeg then says what it finds)."""
    if format_name == "mp3":
        return _mp3_start(path)
    signatures = _SIGNATURES.get(format_name)
    if signatures is None:
        return 0
    with open(path, "rb") as file:
        head = file.read(12)
        if head[:4] in signatures or (format_name == "flac" and head[:3] == b"ID3"):
            return 0
        data = head + file.read(SCAN_BYTES)
    found = [at for at in (_find_start(data, s, format_name) for s in signatures) if at > 0]
    return min(found, default=0)


def _find_start(data: bytes, signature: bytes, format_name: str) -> int:
    at = data.find(signature)
    while at > 0:
        if format_name != "wav" or data[at + 8:at + 12] == b"WAVE":
            if format_name != "ogg" or data[at + 4:at + 5] == b"\0":
                return at
        at = data.find(signature, at + 1)
    return -1


def _mp3_start(path: str) -> int:
    """Where an MP3's first frame (or its ID3v2 tag) starts; 0 when no garbage precedes."""
    with open(path, "rb") as file:
        head = file.read(10)
        tag = id3v2_length(head)
        start = tag or 0
        file.seek(start)
        data = file.read(8192)
        if _mp3_frames_follow(data, 0):
            return 0
        data += file.read(SCAN_BYTES)
    at = data.find(b"\xff")
    while at >= 0:
        if _mp3_frames_follow(data, at):
            return start + _tag_before(data, at)
        at = data.find(b"\xff", at + 1)
    # garbage, then a tag? (an ID3v2 tag behind garbage: FFmpeg reads it only at byte 0)
    at = data.find(b"ID3")
    return start + at if at > 0 and id3v2_length(data[at:at + 10]) else 0


def _tag_before(data: bytes, at: int) -> int:
    """Where an ID3v2 tag that ends right before `at` starts (it is no garbage), else `at`."""
    tag = data.rfind(b"ID3", 0, at)
    while tag >= 0:
        if tag + (id3v2_length(data[tag:tag + 10]) or 0) == at:
            return tag
        tag = data.rfind(b"ID3", 0, tag)
    return at


def _mp3_frames_follow(data: bytes, at: int, count: int = 3) -> bool:
    """Whether `count` MP3 frames of one stream start at `at` (fewer where the data ends)."""
    first = data[at:at + 4]
    for _ in range(count):
        header = data[at:at + 4]
        length = mp3_frame_length(header)
        if length is None or not same_stream("mp3", first, header):
            return False
        at += length
        if at >= len(data):
            return True
    return True


def cut_mp3_frame(path: str, audio_start: int = 0) -> int | None:
    """The byte where an MP3 file's last frame starts when the file ends inside it, else
    None (the frames at the end chain up to the end, or to an ID3v1 / APE tag, or cannot be
    told apart from what follows them)."""
    size = os.path.getsize(path)
    start = max(audio_start, size - _TAIL_BYTES)
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read()
    end = len(data)
    if end >= 128 and data[end - 128:end - 125] == b"TAG":
        return None             # a tag follows the last frame: the frames are whole
    at = data.find(b"\xff")
    while at >= 0 and not _mp3_frames_follow(data, at, 2):
        at = data.find(b"\xff", at + 1)
    if at < 0:
        return None
    first = data[at:at + 4]
    while at < end:
        header = data[at:at + 4]
        length = mp3_frame_length(header)
        if length is None or not same_stream("mp3", first, header):
            return None         # something else follows the frames (a tag, junk)
        if at + length > end:
            return start + at
        at += length
    return None


def cut_ogg_page(path: str) -> int | None:
    """The byte where an Ogg file's last page starts when the file ends inside it, else None."""
    size = os.path.getsize(path)
    start = max(0, size - (1 << 16) - 282)      # a page is at most 65307 bytes
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read()
    at = data.rfind(b"OggS")
    while at >= 0:
        if data[at + 4:at + 5] == b"\0" and len(data) - at >= 27:
            segments = data[at + 26]
            table = data[at + 27:at + 27 + segments]
            if len(table) < segments:
                return start + at
            length = 27 + segments + sum(table)
            return start + at if at + length > len(data) else None
        if len(data) - at < 27:
            return start + at
        at = data.rfind(b"OggS", 0, at)
    return None


def wav_data_frames(path: str, start: int = 0) -> int | None:
    """Sample frames the data chunk of the WAV file at `start` announces; None when it does
    not say (a streaming header's 0 or 0xFFFFFFFF, RF64) or the header cannot be read."""
    with open(path, "rb") as file:
        file.seek(start)
        head = file.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20:pos + 22], "little")
        elif chunk == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        pos += 8 + size + (size & 1)
    return None
