"""Spoken commands: a JSGF grammar from the scene's vocabulary, pocketsphinx decoding of
16 kHz audio, utterance segmentation, WAV reading and microphone capture.

What can be said is generated from the scene file (colours, stations) and the rule-based
reader's vocabulary in ros_vla.language (object words, place words, station synonyms), so
every sentence the grammar accepts is one the reader understands, and adding a colour or a
station to the scene changes what can be said.

Audio is cut into utterances by a voice activity detector, and each utterance is trimmed
to its voiced part. A grammar alone forces any speech onto its closest sentence, so an
utterance is accepted only if (1) the grammar search reaches the end of a sentence (most
out-of-grammar speech falls out of the search beam before it does), and (2) its confidence
is at least `min_confidence`. The confidence is the per-frame geometric-mean likelihood
ratio of the best grammar path to the best unconstrained phone sequence over the same
audio: near 1 when the grammar explains the sound as well as any phone string would, small
when the words were forced onto speech that sounds like something else.
"""

from __future__ import annotations

import itertools
import math
import queue
import re
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pocketsphinx

from ros_vla.language import KIND_SYNONYMS, PLACE_WORDS, STATION_SYNONYMS
from ros_vla.sim.scene import SceneConfig

SAMPLE_RATE = 16000
GRAMMAR_NAME = "ros_vla_commands"

# Verbs the grammar offers; ros_vla.language reads pick-and-place from the object phrases
# and any of these, and navigation from its own verb list, mirrored here.
PICK_PLACE_VERBS = ("put", "place", "move")
NAVIGATE_VERBS = ("go", "drive", "move", "come", "navigate", "return")
# Words that take no article before them in "go to ...".
PRONOUNS = ("me",)

# Chosen on 72 espeak-ng commands and 50 out-of-grammar phrases in 11 voices at 120..165
# words/min: at 0.08, 71 of 72 commands came through exactly and 5 of 50 other phrases were
# taken for a command (near misses such as "go to the garage" -> "go to the human").
DEFAULT_MIN_CONFIDENCE = 0.08
# pocketsphinx keeps path scores in its log base shifted right by SENSCR_SHIFT (10) bits.
_SCORE_SHIFT_BITS = 10


# --------------------------------------------------------------------------- grammar


@dataclass(frozen=True)
class CommandPattern:
    """One way to say a command: a sequence of slots, each a tuple of alternatives
    (a word or several words; "" makes the slot optional)."""

    name: str
    slots: tuple[tuple[str, ...], ...]


def _singular_words(kind: str) -> tuple[str, ...]:
    """Reader's words for an object kind, without plurals (one object per phrase)."""
    words = [w for w, k in KIND_SYNONYMS.items() if k == kind]
    return tuple(w for w in words if not (w.endswith("s") and w[:-1] in words))


def command_patterns(scene: SceneConfig) -> tuple[CommandPattern, ...]:
    """The commands the reader carries out, in words taken from `scene`."""
    colors = tuple(sorted(scene.colors))
    place_targets = []
    for station in sorted(scene.stations):
        spoken = [w for w, s in STATION_SYNONYMS.items() if s == station] or [station.replace("_", " ")]
        place_targets += [w if w in PRONOUNS else f"the {w}" for w in spoken]
    return (
        CommandPattern("pick_place", (PICK_PLACE_VERBS, ("the",), colors, _singular_words("block"),
                                      PLACE_WORDS, ("the",), colors, _singular_words("bowl"))),
        CommandPattern("navigate", (NAVIGATE_VERBS, ("", "back"), ("to",), tuple(place_targets))),
    )


def _jsgf_slot(alternatives: tuple[str, ...]) -> str:
    words = [a for a in alternatives if a]
    inner = " | ".join(words)
    if len(words) < len(alternatives):
        return f"[{inner}]"
    return inner if len(words) == 1 else f"({inner})"


def grammar_from_scene(scene: SceneConfig) -> str:
    """JSGF text of every command in `scene`'s vocabulary; the public rule is <command>."""
    patterns = command_patterns(scene)
    lines = ["#JSGF V1.0;", f"grammar {GRAMMAR_NAME};",
             "public <command> = " + " | ".join(f"<{p.name}>" for p in patterns) + ";"]
    lines += [f"<{p.name}> = " + " ".join(_jsgf_slot(s) for s in p.slots) + ";" for p in patterns]
    return "\n".join(lines) + "\n"


def sentences(scene: SceneConfig) -> Iterator[str]:
    """Every sentence the grammar of `scene` accepts."""
    for pattern in command_patterns(scene):
        for choice in itertools.product(*pattern.slots):
            yield " ".join(word for word in choice if word)


def grammar_words(grammar: str) -> set[str]:
    """The words of a JSGF grammar's rule bodies (rule references and operators removed)."""
    words = set()
    for line in grammar.splitlines():
        if "=" in line:
            body = re.sub(r"<[^>]*>|/[^/]*/", " ", line.split("=", 1)[1])
            words.update(re.sub(r"[()\[\]|;*+]", " ", body).split())
    return words


# --------------------------------------------------------------------------- recognition


@dataclass(frozen=True)
class Recognition:
    text: str  # the accepted command, "" when rejected
    heard: str  # what the grammar search ended with (possibly a partial sentence), "" if nothing
    confidence: float  # 0..1, see the module docstring; 0 when the search found no sentence
    duration_s: float

    @property
    def accepted(self) -> bool:
        return bool(self.text)


class CommandRecognizer:
    """pocketsphinx with the shipped en-us acoustic model and dictionary, decoding one
    utterance at a time against a JSGF command grammar. Not thread-safe: one user thread."""

    def __init__(self, grammar: str, min_confidence: float = DEFAULT_MIN_CONFIDENCE):
        self.min_confidence = min_confidence
        # No n-gram model: only the grammar and the phone loop search. bestpath off: the
        # lattice pass over a grammar returned truncated sentences for 9 of 36 commands
        # here. Fillers off: with silence/noise fillers between words 8 of 36 commands were
        # lost; without them the grammar has no silence model, so recognize() decodes the
        # voiced part of the audio only.
        self._decoder = pocketsphinx.Decoder(lm=None, bestpath=False, fsgusefiller=False, loglevel="FATAL")
        missing = sorted(w for w in grammar_words(grammar) if self._decoder.lookup_word(w) is None)
        if missing:
            raise ValueError(f"words not in the pocketsphinx dictionary: {', '.join(missing)}")
        try:
            self._decoder.add_jsgf_string("grammar", grammar)
        except ValueError as err:
            raise ValueError(f"pocketsphinx cannot compile the grammar: {err}") from err
        self._decoder.add_allphone_file("phone_loop")  # no phone LM: uniform, the best any sound can score
        self._grammar = self._decoder.get_fsg("grammar")
        self._logmath = self._decoder.get_logmath()

    def _decode(self, search: str, pcm: bytes) -> tuple[str | None, int]:
        """Best hypothesis text and its path score (log units >> _SCORE_SHIFT_BITS) for `pcm`.
        The binding hands the score out through LogMath.exp; LogMath.log takes it back."""
        self._decoder.activate_search(search)
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        if hyp is None:
            return None, 0
        return hyp.hypstr, self._logmath.log(hyp.score)

    def recognize(self, samples: np.ndarray) -> Recognition:
        """Decode one utterance: int16 mono samples at 16 kHz."""
        duration_s = len(samples) / SAMPLE_RATE
        voiced = voiced_part(np.asarray(samples, np.int16))
        if len(voiced) == 0:
            return Recognition("", "", 0.0, duration_s)
        pcm = np.ascontiguousarray(voiced, dtype="<i2").tobytes()
        heard, grammar_score = self._decode("grammar", pcm)
        frames = self._decoder.n_frames()
        if not heard or frames == 0 or not self._grammar.accept(heard):
            return Recognition("", heard or "", 0.0, duration_s)
        _, phone_score = self._decode("phone_loop", pcm)
        ratio_nats = self._logmath.log_to_ln((grammar_score - phone_score) << _SCORE_SHIFT_BITS) / frames
        confidence = min(1.0, math.exp(ratio_nats))
        return Recognition(heard if confidence >= self.min_confidence else "", heard, confidence, duration_s)


# --------------------------------------------------------------------------- audio


def voiced_part(samples: np.ndarray, margin_s: float = 0.02) -> np.ndarray:
    """`samples` without their quiet ends: from the first to the last 10 ms frame that is
    12 dB above the quietest tenth of the frames (the noise floor) and within 40 dB of the
    loudest, plus `margin_s`. The grammar has no silence model: with 1 s of silence left
    around them, 37 of 72 espeak-ng commands were lost here; trimmed, 1 was."""
    frame = SAMPLE_RATE // 100
    n = len(samples) // frame
    if n == 0:
        return samples[:0]
    rms = np.sqrt(np.mean(samples[:n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))
    threshold = max(np.percentile(rms, 10) * 10 ** (12 / 20), rms.max() * 10 ** (-40 / 20))
    loud = np.flatnonzero(rms >= threshold)
    if rms.max() == 0 or len(loud) == 0:  # digital silence, or nothing stands out of steady noise
        return samples[:0]
    margin = int(margin_s * SAMPLE_RATE)
    return samples[max(0, loud[0] * frame - margin):(loud[-1] + 1) * frame + margin]


class UtteranceSegmenter:
    """Voice activity segmentation with pocketsphinx's Endpointer (WebRTC VAD): feed audio
    in any block sizes, get each utterance when it ends. Utterances longer than `max_s` are
    dropped: commands are short, and a stuck VAD must not grow a buffer without bound."""

    # The Endpointer calls speech only once most of its 0.3 s window is voiced, so a soft
    # first word ("put the ...") starts up to ~0.25 s before its speech_start: cut from the
    # raw audio with this margin instead of taking the Endpointer's own frames.
    PREROLL_S = 0.3
    HISTORY_S = 1.0  # raw audio kept between utterances, more than the window plus the margin

    def __init__(self, vad_mode: int = 0, max_s: float = 10.0):
        self._endpointer = pocketsphinx.Endpointer(vad_mode=vad_mode, sample_rate=SAMPLE_RATE)
        self._frame_samples = self._endpointer.frame_bytes // 2
        self._pending = np.zeros(0, np.int16)  # fed samples not yet making a whole VAD frame
        self._frames: list[np.ndarray] = []  # raw audio from sample index _first_sample on
        self._first_sample = 0
        self._buffered = 0
        self._in_utterance = False
        self._too_long = False
        self._max_samples = int(max_s * SAMPLE_RATE)
        self.dropped = 0  # utterances over max_s

    def _forget_old_audio(self):
        keep = int(self.HISTORY_S * SAMPLE_RATE)
        while self._frames and self._buffered - len(self._frames[0]) >= keep:
            self._buffered -= len(self._frames[0])
            self._first_sample += len(self._frames[0])
            self._frames.pop(0)

    def _step(self, frame: np.ndarray, last: bool = False) -> np.ndarray | None:
        self._frames.append(frame)
        self._buffered += len(frame)
        speech = (self._endpointer.end_stream if last else self._endpointer.process)(frame.tobytes())
        self._in_utterance |= speech is not None
        if self._in_utterance and not self._endpointer.in_speech:
            self._in_utterance = False
            if self._too_long:
                self._too_long = False
                self.dropped += 1
                return None
            audio = np.concatenate(self._frames)
            start = max(0, round((self._endpointer.speech_start - self.PREROLL_S) * SAMPLE_RATE) - self._first_sample)
            return audio[start:round(self._endpointer.speech_end * SAMPLE_RATE) - self._first_sample]
        if self._in_utterance and self._buffered > self._max_samples:
            self._too_long = True
        if not self._in_utterance or self._too_long:
            self._forget_old_audio()
        return None

    def feed(self, samples: np.ndarray) -> list[np.ndarray]:
        """Utterances that ended within `samples` (int16, 16 kHz mono)."""
        self._pending = np.concatenate([self._pending, np.asarray(samples, np.int16)])
        n = len(self._pending) // self._frame_samples * self._frame_samples
        ended = [self._step(self._pending[i:i + self._frame_samples]) for i in range(0, n, self._frame_samples)]
        self._pending = self._pending[n:]
        return [utterance for utterance in ended if utterance is not None]

    def finish(self) -> list[np.ndarray]:
        """End of the stream: the utterance still open, if any."""
        # end_stream needs at least one sample; a frame of silence flushes an empty tail.
        tail = self._pending if len(self._pending) else np.zeros(self._frame_samples, np.int16)
        self._pending = np.zeros(0, np.int16)
        utterance = self._step(tail, last=True)
        return [] if utterance is None else [utterance]


def segment(samples: np.ndarray, vad_mode: int = 0, max_s: float = 10.0) -> list[np.ndarray]:
    """All utterances in a recording (int16, 16 kHz mono)."""
    segmenter = UtteranceSegmenter(vad_mode, max_s)
    return segmenter.feed(samples) + segmenter.finish()


def resample(samples: np.ndarray, rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float or int audio by linear interpolation; when lowering the rate, a
    windowed-sinc low-pass first removes what would alias into the speech band."""
    x = np.asarray(samples, np.float64)
    if rate == new_rate or len(x) == 0:
        return x
    if new_rate < rate:
        cutoff = 0.45 * new_rate / rate  # cycles per input sample, just under the new Nyquist
        taps = np.arange(-64, 65)
        kernel = 2 * cutoff * np.sinc(2 * cutoff * taps) * np.hanning(len(taps))
        x = np.convolve(x, kernel / kernel.sum(), mode="same")
    n_out = int(round(len(x) * new_rate / rate))
    return np.interp(np.arange(n_out) * (rate / new_rate), np.arange(len(x)), x)


def read_wav(path: str | Path) -> np.ndarray:
    """A 16-bit PCM WAV file as int16 mono at 16 kHz (channels averaged, any rate resampled).
    Audio below 16 kHz is upsampled, but lacks the band up to 8 kHz the en-us model was
    trained on: an 8 kHz recording of "put the red block ..." came out as "orange" here."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getcomptype() != "NONE":
                raise ValueError(f"{path}: only 16-bit PCM WAV is supported (got {8 * wav.getsampwidth()}-bit "
                                 f"{wav.getcomptype()}); convert with: sox in.wav -b 16 out.wav")
            rate, channels = wav.getframerate(), wav.getnchannels()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, channels)
    except (wave.Error, EOFError) as err:
        raise ValueError(f"{path}: not a readable WAV file ({err})") from err
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    if rate == SAMPLE_RATE and channels == 1:
        return mono.astype(np.int16)
    return np.clip(np.round(resample(mono, rate)), -32768, 32767).astype(np.int16)


class MicrophoneError(RuntimeError):
    pass


class Microphone:
    """16 kHz mono int16 capture through PortAudio (sounddevice). The audio callback only
    queues blocks, so a slow decoder never stalls capture; `read` hands them out.
    `device`: "" for the default input, an index, or part of a device name."""

    BLOCK_S = 0.03

    def __init__(self, device: str = ""):
        failure = f"cannot open microphone '{device or 'default'}' at {SAMPLE_RATE} Hz mono"
        try:
            import sounddevice  # PortAudio is loaded here: a machine without it still decodes files
        except (ImportError, OSError) as err:
            raise MicrophoneError(f"{failure}: PortAudio/sounddevice is not available ({err})") from err
        self._blocks: queue.Queue[bytes] = queue.Queue()
        self.overflows = 0
        chosen = int(device) if device.strip().isdigit() else (device or None)
        inputs = [d["name"] for d in sounddevice.query_devices() if d["max_input_channels"] > 0]
        failure += f" (input devices: {', '.join(inputs) or 'none'})"
        try:
            self._stream = sounddevice.RawInputStream(
                samplerate=SAMPLE_RATE, channels=1, dtype="int16", device=chosen,
                blocksize=int(self.BLOCK_S * SAMPLE_RATE), callback=self._on_audio)
        except (sounddevice.PortAudioError, ValueError) as err:
            raise MicrophoneError(f"{failure}: {err}") from err
        self.name = sounddevice.query_devices(self._stream.device)["name"]
        try:
            self._stream.start()
        except sounddevice.PortAudioError as err:
            self._stream.close()
            raise MicrophoneError(f"{failure}: {err}") from err

    def _on_audio(self, data, frames, time_info, status):
        if status.input_overflow:
            self.overflows += 1
        self._blocks.put(bytes(data))

    def read(self, timeout_s: float = 1.0) -> np.ndarray | None:
        """The next block of samples, or None if none came within `timeout_s`."""
        try:
            return np.frombuffer(self._blocks.get(timeout=timeout_s), np.int16)
        except queue.Empty:
            if not self._stream.active:
                raise MicrophoneError("the microphone stream stopped (device unplugged?)") from None
            return None

    def close(self):
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
