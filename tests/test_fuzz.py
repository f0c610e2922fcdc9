"""Fuzzing every parser of untrusted bytes: mutated inputs give a typed error or a consistent
result, never another exception, a hang or unbounded memory (tests/fuzz_targets.py).

CI runs a few hundred cases per target; HYPOTHESIS_PROFILE=fuzz runs 10 000 each, and
benchmarks/fuzz.py runs the long form with figures.
"""

from __future__ import annotations

import base64
import lzma
import os
import struct
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowengine.config import load_run_config, load_source
from flowengine.errors import CodecError, ConfigError, FormatError
from flowengine.ops.io.reader import AudioFileReader
from fuzz_targets import (SELF_TESTS, TARGETS, FuzzWorker, decode_case, encode_case,
                          encoded_packets, file_seeds)

_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
# Cases per target in CI: enough to cross every mutation kind, within a few seconds each.
_CI_CASES = {"wire": 200, "framing": 150, "config": 100, "reader": 60, "salvage": 60}


def _cases(name: str) -> int:
    return 10_000 if _LONG else _CI_CASES.get(name, 60)


@pytest.fixture(scope="module")
def worker():
    with FuzzWorker(timeout_s=30.0, memory_mb=1536) as fuzz_worker:
        yield fuzz_worker


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_inputs_give_only_typed_errors(worker, name):
    allowed = ", ".join(e.__name__ for e in TARGETS[name].allowed)
    labels = set()

    # Derandomized: the same cases in every CI run, so the check below cannot flake (random
    # draws of 60 cases sometimes all decoded cleanly); the long form explores.
    @settings(max_examples=_cases(name), deadline=None, database=None, derandomize=not _LONG,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_case(data):
        case = data.draw(TARGETS[name].cases(), label="case")
        outcome = worker.run(name, case)
        assert not outcome.failed, (f"{name}: {outcome.status} {outcome.label} (only {allowed} "
                                    f"allowed):\n{outcome.detail}")
        labels.add(outcome.label)

    one_case()
    # The mutations reach both sides: inputs refused with a typed error, and accepted ones.
    assert len(labels) >= 2, f"{name}: every case ended the same way: {labels}"


def test_worker_memory_stays_bounded_over_many_cases(worker):
    """RSS of the worker after a warm-up and after more cases of the heaviest target."""
    decoder_case = {"codec": "mp3", "chunk": 1024, "on_error": "skip", "packets": False,
                    "chunks": [bytes([0xFF, 0xFB, 0x90, 0x64]) * 500]}
    for _ in range(20):
        worker.run("decoder-mp3", decoder_case)
    warm = worker.run("decoder-mp3", decoder_case).rss_bytes
    for _ in range(100):
        last = worker.run("decoder-mp3", decoder_case)
    assert last.status == "ok"
    assert last.rss_bytes - warm < 20 * 2**20, f"RSS grew {(last.rss_bytes - warm) >> 20} MB"


# ------------------------------------------------------------- the harness catches what it must

@pytest.fixture(scope="module")
def strict_worker():
    with FuzzWorker(timeout_s=1.0, memory_mb=256) as fuzz_worker:
        yield fuzz_worker


@pytest.mark.parametrize("name, status, label", [
    ("wrong_error", "error", "KeyError"),
    ("hang", "hang", "timeout"),
    ("memory", "memory", "MemoryError"),
    ("segfault", "crash", "exit code -11"),
])
def test_the_worker_reports_errors_hangs_memory_and_crashes(strict_worker, name, status, label):
    assert name in SELF_TESTS
    outcome = strict_worker.run(name, None)
    assert (outcome.status, outcome.label) == (status, label)
    # ... and the next case runs in a working (restarted) worker.
    assert strict_worker.run("wire", [b"\x81\xa1v\x01"]).status == "ok"


def test_cases_round_trip_through_their_saved_form():
    case = {"text": "a: \ud800", "chunks": [b"\xff\x00", b""], "n": [1, None]}
    assert decode_case(encode_case(case)) == case


# ------------------------------------------------------------- regressions found by fuzzing

_BILLION_LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))


@pytest.mark.parametrize("text, message", [
    ("stages: &s [{op: tone, params: *s}]\n",
     r"^fuzz\.yaml:1: YAML alias refers to a node that contains it \(a recursive structure\)$"),
    ("l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + _BILLION_LAUGHS + "stages: [{op: tone}]\n",
     r"^fuzz\.yaml:\d+: YAML aliases expand to more than 100000 nodes \(a run config needs "
     r"a few hundred\)$"),
    # libyaml parses it and the depth check stops it; PyYAML's own parser recurses too deep.
    ("[" * 700 + "]" * 700, r"^fuzz\.yaml(:1: YAML nested deeper than 64 levels|: invalid "
                            r"YAML: nested too deeply)$"),
    ("stages:\n" + "".join(" " * i + "- \n" for i in range(0, 200, 2)),
     r"^fuzz\.yaml:\d+: YAML nested deeper than 64 levels$"),
    ("? [a, b]\n: 1\nstages: [{op: tone}]\n", r"^fuzz\.yaml:1: invalid YAML: found unhashable key$"),
], ids=["recursive", "billion-laughs", "deep-flow", "deep-block", "list-as-key"])
def test_hostile_yaml_structures_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        load_source(text, "fuzz.yaml")


def test_yaml_anchors_within_the_limits_still_work():
    source = load_source("base: &p {frequency: 440}\nstages:\n  - {op: tone, params: *p}\n"
                         "  - {op: gain, params: {<<: *p}}\n")
    assert source.data["stages"][1]["params"] == {"frequency": 440}
    assert source.line_of(("stages", 0, "params", "frequency")) == 1   # the anchor's line


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^config file {path} is not UTF-8 text: byte 0xe9 at "
                                          r"byte offset 9 \(invalid continuation byte\)$"):
        load_run_config(path)


def _read_all(path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with AudioFileReader(path) as reader:
            return sum(frame.samples for frame in reader)


def test_a_tag_that_is_not_utf8_does_not_stop_the_audio(tmp_path):
    wav = file_seeds()[".wav"][1]        # 0.2 s mono 48 kHz
    info = b"INFO" + b"INAM" + struct.pack("<I", 5) + b"caf\xfc\x00" + b"\x00"
    data = wav + b"LIST" + struct.pack("<I", len(info)) + info
    path = tmp_path / "tagged.wav"
    path.write_bytes(data[:4] + struct.pack("<I", len(data) - 8) + data[8:])
    assert _read_all(path) == 9600


def test_an_mp4_cut_inside_its_header_is_a_format_error(tmp_path):
    """The moov box is at the end: cut there, the stream can lose its codec (no decoder)."""
    m4a = file_seeds()[".m4a"][1]
    messages = set()
    for size in range(len(m4a) - 700, len(m4a)):
        path = tmp_path / f"cut{size}.m4a"
        path.write_bytes(m4a[:size])
        try:
            _read_all(path)
        except (FormatError, CodecError) as exc:
            messages.add(str(exc).replace(str(path), "PATH"))
    assert "'PATH': audio stream 0 has no decoder in this FFmpeg (unknown or damaged codec id)" \
        in messages


# An MP3 file damaged by the fuzzer (benchmarks/results/fuzz-failures/reader-17): its frames
# decode at 48 kHz stereo, then at 44.1 kHz; PyAV's resampler raised ValueError.
_RATE_CHANGE_MP3 = (
    "{Wp48S^xk9=GL@E0stWa761SMbT8$j;13T8B3%F^kpf<)_RVDkw#W9OI?Gi}>#9eZIQE`1$gGqn(+gg!*fOAr@yTloT5MM0%"
    "T2BjXQ$=F?;}(E0Pr}0lI|r9k|<q>gX^cP$(rh)>eiF0mIm||Cew71qYqy>pc)eCR%hTUN}7aD7F(EW@&WZ!*mS)d-"
    "FxlFE~l}?zhgy6N|TzH+lE{L`^YeJ8(#9T9oY%BLnqq!A2*5U+zXj7dZ3EFg5M6;<l;Y!>Fyh^=&B7yOH1h!!q|>{s?R`03>"
    "WC-aO+oD5dj4bp_{d=8?t)9(~=#_SI@o~0@PTO%EI=ahWQe8AGfz+ED>L3R)n9U>o+i3Upd<G1nPN04X?O%$Y-"
    "6i=OqY^2=tN0!GstX!j&fq5@883wC;<Y)`rhD`~^6LZB-"
    "e}8C|y9<kFK7I2f5td7F;CW}*)EtCo*Zx9Mz@ygFIXO>jP(AGw#LNLZvDT$9GWz0DuWFn*%hgT*bKcH=qd^1uCW%ejcHUzbQ"
    "Y5)DIjag@0Q7W6{hd^0knqWM;|u8-"
    "Vg?R**U<A&{n<l^@m8ULGGXk(@F8G(y_@J(Vk#9ewEG#{T3mC3(}3EJ4JzzYSKfu1$1rcOwUCou(y?wpOXtSN9$TUof(C+WW"
    "N(&GEF-HoJW(m$9S?=)6QG~fIA%b%$518<eA<CwhqC3-"
    "8}Mo>C7e%omwM$P1A4aMG1c*(ZV#~thU$+fG}<Xw*5^$}~pDoHwFew}P-J2kPn*`hAzbtp!2ozB2EMcH+-"
    "&nk$|Iw9KtwG7^8@>*GE903aH4^(M0HA2c!Y?W1;m(_p2t%_N?p3Rl}tktC6aqpsKW^qJfYfwQ-aa#hlK7#>v_tdLLO$-"
    "Y)uO)jhGS@a!B?415f|t%bHE6=S>T^>~<)2-"
    "bi3oij7cJhSB{9M+1AMT(bWLu~gN3O?_|rXOlnlHYa^73a0VUzz^`&(3_s%N1CpF$ycV^G|I$Y3+-"
    "#y4E+zp=SYbfbilF+V|l5+@vJ_ep~%UD3d;m`gSX0SSqpQ5<)y272|f2ytjw*w^?13n@Zk{`QZLWN9Z3k4{aO&TB)g`>MOTn"
    "R^0Me<*kAs=qU|Ft7Ri=o7eh`1SHa00|MxHm1l^i1+-"
    "jDT?pp)Olm8rW2E8Oi@HZ3u?yKv0H#8_;h6u>Fz1>GP$XA++v)sS58!K>Tl!{>a#^o$R3lNp!yU#_d*G8477MieA4%liB)xU"
    "ec9}3Fq2dkUWO3SeX)O&I~)Vl4nK{RYtwxO?6(r@P*!En)g$OM0qt~&wMrPi)I;MfjJNsZ%9NF@OFSdWcd2>FDa4?c|#x!l?"
    "L6ES!cH8<R1W2u^=_NhkVUemcNLHf^pV?R6lM6)Ov%zE~XlTyQeBHCOg7u(sFOXiw(?_HatJr4D4{il^av2plX8QI}2)9GIF"
    "P5lR2>V^(8V|0S)|`sY(K^2tXuSfq<9VW{yWkwk9B5Z_$MPE<6EKib$IqpUOkPFxfdKkLq%94c{&ePjrJmg+iydwD`$HO|c#"
    "Sb(chWJSEFm?Y|DC*R}<w<qB6e3{E&v-+WOKf-"
    "6xZauH$s7kltjwHIkpXyvljzCa~+Vd0FOW;kv;q(`rL+YOZ;AcSs*CQWOa;<Y3xY)ik}7O_7#PEUSs6V|W?g8ZR4<@+dzq;A"
    "_}`NP%hiO$0l&~dUB>XmWr1L}14Kq|t9V|Q&$+Cn)7ogF|=O%T)nDh)^zI9vGmUL*``R$k^(7%}CoWl9Gup{Nz}B?!XN<pyT"
    "c4*C2+X1r{5z1M|J{_d#E`ZcE;$v-"
    "Y|p8lMT=3Dct;~F#K+Iyl&l#~UBl}W|&JRtgzu?Prs$tq=si4C*Z3Lly)x^hao;=p)RlG>#*l!<umJ*ur_xT7^UsRyR42*ln"
    "pSyN@eb^JvjLeZ^1c6@WV^oq;vSWRKHo>9mmi}MfI?@&f1Jk}gf?5OBI-sz5=VAwvLqU+y7w{c-"
    "JtS4llJccit7M*Bo%T)V5%~REh&59l|i+&C$U8IRNA+wjB0dIsz^Ron8Hma6Y?bsOW_Q+v+AJt>5dN_#WFx6Nwo1X#AkFDn}"
    ">ba99yB6X?Cyr?!jzZ=YkX6=*4Ox~AR!p?sJF*kt4uMelgNb1MmPW@9AA;lywbQ{N&8nieJ;m*J|CA^~zexpdG3O7S`NG2!6"
    "Dwo#?tg=!Tm}PFca!8sx$we9&JeG_?`7widf$#R5~GaH<g75>LJpx$;Rfw&pi8K{pk=r}6n1z~EcKECX<=$$h^1VGI2{P48W"
    "{_yacBxhud0r`=XSQMofd>g`kj;ewCZs((ZZfp+=z<FB}C9*$V=9fMV9d-"
    "68)Am5a5_IWq>L3LFd_DTZDiA)xU&eZW>U5eT0-"
    "+NpjlRF(zw<pB~&)SAc04pi_;|s}5#(0VF08unS_aVaX7_i5yAg!5SO<$LmHaG_K30u|p)Y`Kg$G&%!SeCs%a);9^*}4F^HO"
    "&8I0+=00)MQ;kbDx^)>>vW3IZa~QYDAm;E!Xc9a=7fFQP@8EJ+PT<G*W88TZ&_s~AJN-np(6t@K>^YTkw6zX*eUPkX3RVCp<"
    "?_QU5f7dr6QqYTZ2JKsPZP1f_E>;pE5!EU5&3RU7`gv)5TNJYn#67?GId>q?BL^HtCqk^KJc00gDtGtc4w!VTMH@n1u}7r-"
    "BU=t2;T_BqNI)wEeT<X^-h?WqHMrm8jbK#!u<-2p@Ws_&ORb;oc>6xHScgKR0N~30-"
    "ZP?gT^R#K=+kDAiqJO^sg{CMdnOSV`F<LPy)<A;a=v0MC{D9*k`okArg}Kf$SuN9AT$dZ-bEu(ixaz)WTGYLy~}k#Imf1>K*"
    "S2m&HX?T>J!Se1xDIIO0zC>;+61))~{%IqC_nB$+DhEOa;=zPY)d+d1RLoV;Aq=)R|fa>wod@dCI-"
    ">21_>(N^mh2%lfT`n>pqaIS~RyBOi^s_Hc<wQ(>dS2-I7hVA0Qk3Pwqf7H1uT{c1~Pi+sb@R1`8TJo<tPrUzVU-"
    "k~)Q8~`90VO6<2K(L+To{c=HK&ahnwCqyu*acI#xa|qU;qFBGxF`u6ymw600F)dkRAX4<PA+yvBYQl0ssI200dcD"
)


def test_audio_changing_format_mid_file_is_a_codec_error_after_the_samples_before(tmp_path):
    path = tmp_path / "changes.mp3"
    path.write_bytes(lzma.decompress(base64.b85decode("".join(_RATE_CHANGE_MP3))))
    with AudioFileReader(path) as reader:
        frames = []
        with pytest.raises(CodecError, match=r"mp3 stream 0: decoded audio changed format "
                                             r"mid-stream at [\d.]+ s: \('fltp', 'stereo', 48000\) "
                                             r"then \('fltp', 'stereo', 44100\)"):
            for frame in reader:
                frames.append(frame)
    assert sum(f.samples for f in frames) > 0


def test_channels_changing_mid_file_are_a_codec_error_not_a_fifo_error(tmp_path):
    """5.0 frames, then mono ones: the resampler passed the mono frames through unconverted
    (the first needed no conversion) and the FIFO raised ValueError."""
    path = tmp_path / "five-then-mono.aac"
    path.write_bytes(b"".join(encoded_packets("aac", 48000, 5, "sine")[0])
                     + b"".join(encoded_packets("aac", 48000, 1, "bursts")[0]))
    with AudioFileReader(path) as reader:
        samples = 0
        with pytest.raises(CodecError, match=r"aac stream 0: decoded audio changed format "
                                             r"mid-stream at [\d.]+ s: \('fltp', '5.0', 48000\) "
                                             r"then \('fltp', 'mono', 48000\)$"):
            for frame in reader:
                samples += frame.samples
    # Every 5.0 frame before the change: 13 packets of 1024 (0.25 s and the priming frame).
    assert samples == len(encoded_packets("aac", 48000, 5, "sine")[0]) * 1024 == 13312
