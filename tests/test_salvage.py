"""Damaged files (issue #15, items 1-3): `on_error: fail` names the file, the byte and the
time; `on_error: skip` replaces damaged frames with silence of their duration, keeps every
other sample where it was, counts what it replaced, and gives the same samples whether the
file is decoded by the reader (pcm mode) or by a Decoder fed its packets.

The files are made here (tests/damaged_media.py): 4 s of a stereo chirp and tone as MP3,
ADTS AAC, FLAC, Opus (Ogg) and WAV, each damaged five ways: 2000 random bytes in the middle,
2000 zero bytes there, the end cut off at 3/4, 3000 bytes cut out of the middle, 1500 bytes
of garbage before the file.

What the formats allow (docs/architecture.md, "Damaged input"):
- FLAC numbers its frames and Ogg stamps its pages: after any damage, including a cut, the
  output has exactly the clean length and every later sample is where it was.
- MP3 and ADTS have no timestamps: a damaged stretch is measured in frames of the stream's
  mean size (within a frame of the truth), a cut cannot be measured (the output is as much
  shorter as the cut was long, like every decoder's).
- WAV has no framing and no checksum: damage inside it decodes to what the bytes say.
- The unit Ogg drops is a page (about a second here), since its CRC covers the page.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from audio_checks import aligned_correlation
from damaged_media import (CODECS, DAMAGES, DECODED_RATE, FRAME_SAMPLES, PACKET_MODE_OFFSET,
                           damage, damaged_samples, ffmpeg_samples, frame_table, lame_library,
                           mp3_with_crc, read_packets, read_pcm, signal, write_clean)
from flowengine.cli.main import main
from flowengine.errors import CodecError
from flowengine.ops.codecs.decoder_headers import mp3_frame_length

LOSSLESS = ("flac", "wav")
TIMESTAMPED = ("flac", "opus")          # containers that say where every frame belongs
# What `on_error: fail` cannot see: damage inside PCM samples (no framing, no checksum).
UNDETECTABLE = {("wav", "random"), ("wav", "zero")}
# ... and a cut inside them is seen only at the end, where the file is short of its header.
FOUND_AT_THE_END = {("wav", "cut")}
_PAGE_BYTES = 70000         # an Ogg page holds up to about a second of audio here


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Per codec: the clean file, its samples (pcm mode), its frame table, and per damage the
    damaged file and where the damage is."""
    folder = tmp_path_factory.mktemp("salvage")
    found = {}
    for codec, ext in CODECS.items():
        clean = write_clean(folder, codec)
        data = clean.read_bytes()
        damaged = {}
        for kind in DAMAGES:
            bad, where = damage(data, kind, codec)
            path = folder / f"{kind}{ext}"
            path.write_bytes(bad)
            damaged[kind] = (path, where)
        found[codec] = {"clean": clean, "pcm": read_pcm(clean)[0],
                        "frames": frame_table(clean, codec), "damaged": damaged}
    return found


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _correlation(reference: np.ndarray, got: np.ndarray) -> float:
    """Aligned correlation of channel 0 (the chirp: no two stretches alike)."""
    return aligned_correlation(reference[0], got[0], max_lag=8192)


# ---------------------------------------------------------------------------- on_error: skip

@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", DAMAGES)
def test_skip_keeps_the_timeline_and_every_sample_outside_the_damage(media, codec, kind):
    clean, frames = media[codec]["pcm"], media[codec]["frames"]
    path, hurt = media[codec]["damaged"][kind]
    got, report = read_pcm(path, on_error="skip")
    frame = FRAME_SAMPLES[codec]
    first, last = damaged_samples(frames, hurt)

    if kind == "garbage":                      # skipped before the audio: nothing lost
        assert _equal(got, clean)
        assert report.leading_bytes == 1500 and not report.events
        return
    if kind == "truncated":                    # what the file holds, then the stream ends
        unit = _page_samples(frames) if codec == "opus" else frame   # Ogg drops the page
        slack = _PAGE_BYTES if codec == "opus" else 2 * max(f.size for f in frames)
        assert report.end is not None and report.end.byte >= hurt.start - slack
        assert first - unit <= got.shape[1] <= first + 2 * frame
        _assert_same_before(codec, clean, got, min(first, got.shape[1] - frame))
        return
    if kind == "cut" and codec not in TIMESTAMPED:
        # No timestamps: the cut's duration is gone from the output, as from every decoder's.
        cut = hurt.shift / _bytes_per_sample(media[codec])
        assert abs(got.shape[1] - (clean.shape[1] - cut)) <= 2 * frame
    elif codec in LOSSLESS:
        assert got.shape[1] == clean.shape[1]
    else:                                      # the output has the input's length
        assert abs(got.shape[1] - clean.shape[1]) <= frame
    _assert_same_before(codec, clean, got, first)
    _assert_same_after(codec, clean, got, last, hurt, media[codec])
    if (codec, kind) in UNDETECTABLE:
        assert not report.events
        return
    if (codec, kind) in FOUND_AT_THE_END:
        assert not report.events and report.end is not None
        assert f"it holds {hurt.shift // 4} samples fewer than its header" in report.end.what
        return
    # Replaced: the damaged span, within a frame (Ogg: within the page its CRC covers).
    unit = _page_samples(frames) if codec == "opus" else frame
    assert report.events >= 1 and report.samples > 0
    if kind == "cut" and codec not in TIMESTAMPED:
        assert report.samples <= (last - first) + frame
    else:
        assert abs(report.samples - (last - first)) <= unit, (report.samples, first, last)
    spot = report.spots[0]          # found in the damage, or where decoding resumed after it
    slack = _PAGE_BYTES if codec == "opus" else 4 * max(f.size for f in frames)
    assert hurt.start - slack <= spot.byte <= hurt.end + slack
    assert abs(spot.seconds - first / DECODED_RATE[codec]) <= 2 * unit / DECODED_RATE[codec]


def _bytes_per_sample(found: dict) -> float:
    frames = found["frames"]
    return sum(f.size for f in frames) / sum(f.samples for f in frames)


def _page_samples(frames) -> int:
    pages: dict[int, int] = {}
    for frame in frames:
        pages[frame.pos] = pages.get(frame.pos, 0) + frame.samples
    return max(pages.values())


def _assert_same_before(codec: str, clean: np.ndarray, got: np.ndarray, first: int) -> None:
    """The samples before the damaged frames: bit-exact (lossless), correlated (lossy: the
    last frame before the damage is the decoder's overlap, so stop a frame early)."""
    if codec in LOSSLESS:
        assert _equal(got[:, :first], clean[:, :first])
        return
    stop = first - 2 * FRAME_SAMPLES[codec]
    assert _equal(got[:, :stop], clean[:, :stop])      # the same decoder, the same bytes


def _assert_same_after(codec: str, clean: np.ndarray, got: np.ndarray, last: int, hurt,
                       found: dict) -> None:
    """The samples after the damaged frames: where they were (a cut in a file without
    timestamps moves them earlier by its duration)."""
    frame = FRAME_SAMPLES[codec]
    shift = 0
    if hurt.shift and codec not in TIMESTAMPED:
        shift = got.shape[1] - clean.shape[1]           # measured: what the cut took away
    if codec in LOSSLESS:
        after = clean[:, last:]
        assert _equal(got[:, last + shift:last + shift + after.shape[1]], after)
        return
    start = last + 4 * frame                            # past the decoder's memory of it
    window = clean[:, start:start + 20 * frame]
    moved = got[:, max(0, start + shift - 4 * frame):start + shift + 24 * frame]
    assert _correlation(window, moved) >= 0.99


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", DAMAGES)
def test_both_modes_give_the_same_samples(media, codec, kind):
    """The reader in pcm mode and a Decoder fed the reader's packets (both on_error: skip)
    decode a damaged file to the same samples (the Decoder keeps MP3's encoder delay, which
    the reader trims with the LAME tag, and Opus's last-packet padding)."""
    path, _ = media[codec]["damaged"][kind]
    pcm, pcm_report = read_pcm(path, on_error="skip")
    packets, packet_report = read_packets(path, on_error="skip")
    offset = PACKET_MODE_OFFSET.get(codec, 0)
    assert _equal(packets[:, offset:offset + pcm.shape[1]], pcm)
    if codec != "wav":
        assert (packet_report.frames, packet_report.samples) == \
            (pcm_report.frames, pcm_report.samples)


@pytest.mark.parametrize("codec", ["mp3", "aac"])
@pytest.mark.parametrize("kind", DAMAGES)
def test_salvage_gives_at_least_what_ffmpeg_gives(media, codec, kind):
    """The duration lost to the damage is at most what `ffmpeg -i damaged out.wav` loses (each
    against its own decode of the clean file: FFmpeg decodes an MP3 behind garbage without its
    LAME tag, a frame and the encoder padding longer than the audio)."""
    path, _ = media[codec]["damaged"][kind]
    theirs, theirs_clean = ffmpeg_samples(path), ffmpeg_samples(media[codec]["clean"])
    if theirs is None:
        pytest.skip("ffmpeg is not on the PATH")
    ours, _ = read_pcm(path, on_error="skip")
    lost_here = media[codec]["pcm"].shape[1] - ours.shape[1]
    lost_there = theirs_clean - theirs
    assert lost_here <= max(0, lost_there), (lost_here, lost_there)


@pytest.mark.parametrize("mode", ["pcm", "packet"])
def test_a_flac_frame_failing_only_its_crc_is_found(media, tmp_path, mode):
    """A frame whose CRC-16 alone is wrong decodes without a complaint unless the CRC is
    checked (FFmpeg's err_detect=crccheck only logs it; +explode makes it an error): now it is
    found, and under skip replaced, exactly that frame."""
    frames = media["flac"]["frames"]
    data = bytearray(media["flac"]["clean"].read_bytes())
    target = frames[len(frames) // 2]
    data[target.pos + target.size - 1] ^= 0x01          # the last byte of its CRC-16
    path = tmp_path / "crc.flac"
    path.write_bytes(bytes(data))
    read = read_pcm if mode == "pcm" else read_packets
    with pytest.raises(CodecError, match=r"flac"):
        read(path)
    got, report = read(path, on_error="skip")
    clean = media["flac"]["pcm"]
    expected = clean.copy()
    expected[:, target.start:target.start + target.samples] = 0
    assert _equal(got, expected)
    assert (report.frames, report.samples) == (1, target.samples)


# ---------------------------------------------------------------------------- on_error: fail

def _run(tmp_path: Path, stages: list[dict], *args: str) -> int:
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"name": "salvage", "stages": stages}))
    return main(["run", str(config), "--quiet", *args])


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", DAMAGES)
def test_fail_names_file_byte_and_time_and_keeps_the_part(media, tmp_path, capsys, codec,
                                                         kind):
    path, hurt = media[codec]["damaged"][kind]
    out = tmp_path / "out.wav"
    code = _run(tmp_path, [{"name": "src", "op": "file_source", "params": {"path": str(path)}},
                           {"name": "sink", "op": "file_sink", "params": {"path": str(out)}}],
                "--in-process")
    if (codec, kind) in UNDETECTABLE:
        assert code == 0 and out.exists()
        return
    error = capsys.readouterr().err
    assert code == 1, error
    found = re.search(rf"flowengine: run failed: .*'{re.escape(str(path))}': {codec} stream 0: "
                      rf".* at byte (\d+) \((\d+\.\d{{3}}) s\)", error)
    assert found, error
    byte = int(found.group(1))
    if kind == "garbage":           # before any audio: nothing was written
        assert byte == 0 and "1500 bytes of garbage before the first" in error
        assert not list(tmp_path.glob("out.wav*"))
        return
    if (codec, kind) in FOUND_AT_THE_END:
        assert byte == path.stat().st_size
    else:
        largest = max(f.size for f in media[codec]["frames"])
        slack = _PAGE_BYTES if codec == "opus" else 4 * largest
        assert hurt.start - slack <= byte <= hurt.end + slack
    assert (tmp_path / "out.wav.part").exists() and not out.exists()
    assert "incomplete outputs, kept as .part" in error


def test_a_damaged_file_stops_alone_and_the_other_files_go_on(media, tmp_path, capsys):
    """files with on_error: fail (damaged frames stop the file) and on_file_error: skip (a
    stopped file does not stop the others): the damaged file stays .part with its error in
    the audit, the others are written whole."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, source in (("a", media["flac"]["clean"]), ("b", media["wav"]["clean"]),
                         ("bad", media["flac"]["damaged"]["random"][0])):
        shutil.copy(source, folder / f"{name}{source.suffix}")
    code = _run(tmp_path, [
        {"name": "src", "op": "files",
         "params": {"paths": str(folder), "on_error": "fail", "on_file_error": "skip"}},
        {"name": "sink", "op": "file_sink",
         "params": {"path": str(tmp_path / "out" / "{stream}.wav")}}], "--in-process")
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "b.wav",
                                                                  "bad.wav.part"]
    for name, codec in (("a", "flac"), ("b", "wav")):
        written, _ = read_pcm(tmp_path / "out" / f"{name}.wav")
        assert np.allclose(written, media[codec]["pcm"], atol=1 / 32768)
    assert "stage 'src' stream 'bad' (files): skipped (after an error, on_error: skip)" in printed


# ---------------------------------------------------------------------------- the account

@pytest.mark.parametrize("mode", ["pcm", "packet"])
def test_the_account_reaches_the_audit_the_table_and_the_report(media, tmp_path, capsys,
                                                                mode):
    """In worker processes: the audit line names what was replaced and where, the table's
    'replaced' column counts it, --report has it per stream; the run succeeds."""
    path, _ = media["mp3"]["damaged"]["random"]
    stages = [{"name": "src", "op": "file_source", "on_error": "skip",
               "params": {"path": str(path), "mode": mode}}]
    if mode == "packet":
        stages.append({"name": "decode", "op": "mp3_decoder", "on_error": "skip"})
    stages.append({"name": "sink", "op": "file_sink",
                   "params": {"path": str(tmp_path / "out.wav")}})
    report_path = tmp_path / "report.json"
    assert _run(tmp_path, stages, "--report", str(report_path)) == 0
    printed = capsys.readouterr().out
    stage = "src" if mode == "pcm" else "decode"
    op = "file_source" if mode == "pcm" else "mp3_decoder"
    line = re.search(rf"  stage '{stage}' stream 'random' \({op}\): salvaged: (\d+) damaged "
                     rf"frame\(s\) in 1 place\(s\) replaced by (\d+) samples of silence "
                     rf"\([\d.]+ s\) at (byte \d+ )?\(([\d.]+) s\)", printed)
    assert line, printed
    frames, samples = int(line.group(1)), int(line.group(2))
    assert samples == frames * 1152 and frames >= 3
    assert printed.splitlines()[0].split()[-1] == "replaced"
    row = next(r for r in printed.splitlines() if r.startswith(f"{stage} "))
    assert row.split()[-1] == str(samples)
    assert "all balanced" in printed
    report = json.loads(report_path.read_text())
    account = report["salvaged"]["random"][stage]
    assert (account["frames"], account["samples"], account["places"]) == (frames, samples, 1)
    assert (account["at"][0]["byte"] is None) == (mode == "packet")
    assert report["audit"]["ok"]
    written, _ = read_pcm(tmp_path / "out.wav")
    pcm, _ = read_pcm(path, on_error="skip")
    offset = PACKET_MODE_OFFSET["mp3"] if mode == "packet" else 0
    assert np.allclose(written[:, offset:offset + pcm.shape[1]], pcm, atol=1 / 32768)


@pytest.mark.parametrize("mode", ["pcm", "packet"])
def test_an_mp3_frame_failing_its_crc_is_found(tmp_path, mode):
    """MP3 frames may carry a CRC over their header and side info; FFmpeg checks it when
    asked (err_detect=crccheck+explode): a frame whose side info was damaged is found, not
    decoded to wrong audio. (Without a CRC the same damage decodes without a word.)"""
    lame = lame_library()
    if lame is None:
        pytest.skip("no libmp3lame to encode an MP3 with CRCs")
    data = bytearray(mp3_with_crc(lame, signal(2.0)))
    assert data[1] & 1 == 0                             # protection bit: CRC present
    positions = [0]
    while (length := mp3_frame_length(bytes(data[positions[-1]:positions[-1] + 4]))) and \
            positions[-1] + length < len(data):
        positions.append(positions[-1] + length)
    target = positions[40]
    data[target + 6 + 5] ^= 0x01                        # a bit of its side info
    path = tmp_path / "crc.mp3"
    path.write_bytes(bytes(data))
    read = read_pcm if mode == "pcm" else read_packets
    with pytest.raises(CodecError, match=r"damaged frame at (byte|byte of the stream's "
                                         r"packets) (\d+) \((1\.04\d) s\)") as failed:
        read(path)
    if mode == "pcm":
        assert f"at byte {target} (" in str(failed.value)
    got, report = read(path, on_error="skip")
    assert (report.frames, report.samples) == (1, 1152)
    assert got.shape[1] == len(positions) * 1152
    assert not got[:, 40 * 1152:41 * 1152].any()
