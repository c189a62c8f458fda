"""speech_node: spoken commands in, `instruction` text out.

Listens to a microphone (parameter `device`) or decodes a WAV file (parameter `wav_file`),
cuts the audio into utterances with a voice activity detector and recognises each one with
pocketsphinx against a grammar generated from the scene file's vocabulary
(ros_vla.speech). Accepted commands go out on `instruction` (std_msgs/String); every
utterance is reported on `speech/status` (JSON: text, confidence, source, heard, accepted,
duration_s; text is "" when the utterance was rejected). Decoding runs in a worker thread.
A missing microphone is reported on /diagnostics and retried; the node stays up.
"""

from __future__ import annotations

import threading
import time

from rclpy.node import Node
from std_msgs.msg import String

from ros_vla.nodes.common import COMMAND_QOS, STATUS_QOS, Diagnostics, declare, publish_json, run_node, start_worker
from ros_vla.paths import config_file
from ros_vla.sim.scene import load_scene
from ros_vla.speech import (
    DEFAULT_MIN_CONFIDENCE,
    CommandRecognizer,
    Microphone,
    MicrophoneError,
    UtteranceSegmenter,
    grammar_from_scene,
    read_wav,
)


class SpeechNode(Node):
    def __init__(self):
        super().__init__("speech")
        self.params = p = declare(
            self, scene_file="", device="", wav_file="", min_confidence=DEFAULT_MIN_CONFIDENCE, vad_mode=0,
            max_utterance_s=10.0, wait_for_subscriber_s=10.0, microphone_retry_s=5.0)
        scene = load_scene(p["scene_file"] or config_file("scene_tabletop.yaml"))
        self.recognizer = CommandRecognizer(grammar_from_scene(scene), p["min_confidence"])
        self.diag = Diagnostics(self)
        self.instruction_pub = self.create_publisher(String, "instruction", COMMAND_QOS)
        self.status_pub = self.create_publisher(String, "speech/status", STATUS_QOS)
        self.stopping = threading.Event()
        listen = self.decode_file if p["wav_file"] else self.listen_to_microphone
        self.worker = start_worker(self, listen, "speech")

    def segmenter(self) -> UtteranceSegmenter:
        return UtteranceSegmenter(self.params["vad_mode"], self.params["max_utterance_s"])

    def on_utterance(self, utterance, source: str):
        result = self.recognizer.recognize(utterance)
        publish_json(self.status_pub, {"text": result.text, "confidence": round(result.confidence, 3),
                                       "source": source, "heard": result.heard, "accepted": result.accepted,
                                       "duration_s": round(result.duration_s, 2)})
        if result.accepted:
            self.instruction_pub.publish(String(data=result.text))
            self.get_logger().info(f'heard "{result.text}" (confidence {result.confidence:.2f})')
        else:
            self.get_logger().info(f"ignored a {result.duration_s:.1f} s utterance: "
                                   f'best guess "{result.heard}", confidence {result.confidence:.2f}')

    def decode_file(self):
        path = self.params["wav_file"]
        try:
            samples = read_wav(path)
        except (OSError, ValueError) as err:
            self.diag.publish("error", f"cannot read wav_file: {err}", wav_file=path)
            return
        # Commands published before anyone subscribes are lost: give a listener time to appear.
        deadline = time.monotonic() + self.params["wait_for_subscriber_s"]
        while not self.instruction_pub.get_subscription_count() and time.monotonic() < deadline:
            if self.stopping.wait(0.05):
                return
        segmenter = self.segmenter()
        utterances = segmenter.feed(samples) + segmenter.finish()
        for utterance in utterances:
            if self.stopping.is_set():
                return
            self.on_utterance(utterance, f"file:{path}")
        self.diag.publish("ok", f"decoded {path}: {len(utterances)} utterances", wav_file=path,
                          dropped_too_long=segmenter.dropped)

    def listen_to_microphone(self):
        device, retry_s = self.params["device"], self.params["microphone_retry_s"]
        while not self.stopping.is_set():
            try:
                microphone = Microphone(device)
            except MicrophoneError as err:
                self.diag.publish("error", f"no microphone: {err}; retrying every {retry_s} s", device=device)
                self.stopping.wait(retry_s)
                continue
            self.diag.publish("ok", f"listening on '{microphone.name}'", device=device)
            with microphone:
                self.listen(microphone)
            self.stopping.wait(retry_s)  # the stream failed: do not spin reopening it

    def listen(self, microphone: Microphone):
        segmenter = self.segmenter()
        source = f"microphone:{microphone.name}"
        try:
            while not self.stopping.is_set():
                block = microphone.read(timeout_s=1.0)
                for utterance in [] if block is None else segmenter.feed(block):
                    self.on_utterance(utterance, source)
                    self.diag.publish("ok" if not microphone.overflows else "warn", f"listening on '{microphone.name}'",
                                      audio_overflows=microphone.overflows, dropped_too_long=segmenter.dropped)
        except MicrophoneError as err:
            self.diag.publish("error", str(err), device=self.params["device"])

    def close(self):
        self.stopping.set()
        self.worker.join(timeout=2.0)


def main(args=None) -> int:
    return run_node(SpeechNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
