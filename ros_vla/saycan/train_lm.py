"""Train the small causal LM that ships as SayCan's default language model (models/saycan_lm).

A byte-level BPE tokenizer and a GPT-2-style network are both built here from the
generated corpus (ros_vla.saycan.corpus); nothing is downloaded. Each training document
is the planner's preamble followed by 1-4 corpus examples, half of them with their
Explanation lines, so the few-shot prompt the planner uses is in distribution.

Measured at the end on held-out generated examples (a different corpus seed): top-1
next-step accuracy over the example scene's whole skill library, scored exactly as the
planner scores (sum of log-probabilities after the few-shot prompt).

    python -m ros_vla.saycan.train_lm --out models/saycan_lm
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np

from ros_vla.saycan import prompt
from ros_vla.saycan.corpus import CorpusGenerator, Example, document, few_shot_examples

END_OF_TEXT = "<|endoftext|>"


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT,
                                   bos_token=END_OF_TEXT, unk_token=END_OF_TEXT)


def build_model(vocab_size: int, layers: int, width: int, heads: int, positions: int, seed: int,
                arch: str = "llama"):
    """llama: rotary position embeddings, which see where a token is relative to the current
    one wherever the document sits in a packed training row; finding "the colour after
    'the' in the Human line" is a relative lookup. gpt2: learned absolute positions."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=3 * width,
                             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                             max_position_embeddings=positions, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                             tie_word_embeddings=True)
        return LlamaForCausalLM(config)
    config = GPT2Config(vocab_size=vocab_size, n_positions=positions, n_embd=width, n_layer=layers, n_head=heads,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def training_documents(generator: CorpusGenerator, rng: random.Random, count: int) -> list[str]:
    return [document([generator.example() for _ in range(rng.randint(1, 4))], rng.random() < 0.5)
            for _ in range(count)]


def encode_document(tokenizer, examples: list[Example], with_explanation: bool) -> tuple[list[int], list[int]]:
    """Token ids of a training document and its labels: the loss is on what the robot writes
    (Explanation and plan lines), not on the scene and the free-form instructions, which no
    model can predict. Pieces end at line breaks, where byte-level BPE splits anyway, so the
    ids equal the whole document's."""
    pieces = [(prompt.PREAMBLE, False)]
    for e in examples:
        text = e.text(with_explanation)
        human_line_end = text.index("\n", text.index("Human:")) + 1
        pieces += [(text[:human_line_end], False), (text[human_line_end:], True)]
    ids, labels = [], []
    for text, learn in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if learn else [-100] * len(piece)
    return ids + [tokenizer.eos_token_id], labels + [-100]


def next_step_accuracy(lm, examples: list[Example], generator: CorpusGenerator) -> dict:
    """Top-1 next-step accuracy over each example's skill library, and whole-plan accuracy."""
    head = few_shot_examples(with_explanation=False)
    steps_right = steps_total = plans_right = 0
    for e in examples:
        blocks = [o.replace(" ", "_") for o in e.objects if o.endswith("block")]
        bowls = [o.replace(" ", "_") for o in e.objects if o.endswith("bowl")]
        texts = generator.library(blocks, bowls).texts
        plan_ok = True
        for k, gold in enumerate(e.plan):
            scores = lm.score(head + prompt.query(e.objects, e.instruction, e.plan[:k]),
                              [prompt.step_option(t) for t in texts])
            right = texts[int(np.argmax(scores))] == gold
            steps_right += right
            steps_total += 1
            plan_ok &= right
        plans_right += plan_ok
    return {"next_step_accuracy": steps_right / steps_total, "plan_accuracy": plans_right / len(examples),
            "eval_examples": len(examples), "eval_steps": steps_total}


def train(args) -> dict:
    import torch

    from ros_vla.saycan.llm import HFCausalLM

    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    generator = CorpusGenerator(args.seed)
    started = time.perf_counter()
    if args.init:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.init, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(args.init, local_files_only=True)
    else:
        tokenizer = build_tokenizer(training_documents(generator, rng, 1500) + [few_shot_examples(True)],
                                    args.vocab_size)
        model = build_model(len(tokenizer), args.layers, args.width, args.heads, args.positions, args.seed,
                            args.arch)
    params = sum(p.numel() for p in model.parameters())
    print(f"tokenizer: {len(tokenizer)} tokens; model: {params / 1e6:.2f} M parameters", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    def learning_rate(step: int) -> float:
        warmup = 20 if args.init else 50
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    model.train()
    losses = []
    stream: list[int] = []
    targets: list[int] = []
    for step in range(args.steps):
        # Documents packed end to end (each closed by the end-of-text token): no padding.
        while len(stream) < args.batch * args.context:
            for _ in range(64):
                examples = [generator.example() for _ in range(rng.randint(1, 4))]
                ids, labels = encode_document(tokenizer, examples, rng.random() < 0.5)
                stream += ids
                targets += labels
        size = args.batch * args.context
        ids = torch.tensor(stream[:size]).view(args.batch, args.context)
        labels = torch.tensor(targets[:size]).view(args.batch, args.context)
        stream, targets = stream[size:], targets[size:]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        loss = model(ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {np.mean(losses[-50:]):.4f}  {time.perf_counter() - started:6.0f} s",
                  flush=True)
    train_s = time.perf_counter() - started
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    held_out = CorpusGenerator(args.seed + 1000)
    measured = next_step_accuracy(HFCausalLM(out, model=model, tokenizer=tokenizer),
                                  [held_out.example() for _ in range(args.eval_examples)], held_out)
    result = {"parameters": params, "vocab_size": len(tokenizer), "train_steps": args.steps, "batch": args.batch,
              "context": args.context,
              "final_loss": float(np.mean(losses[-50:])), "train_wall_s": round(train_s, 1), **measured,
              "command": "python -m ros_vla.saycan.train_lm " + " ".join(args.argv)}
    (out / "training.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train SayCan's small language model on the generated corpus")
    parser.add_argument("--out", default="models/saycan_lm")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--context", type=int, default=256, help="tokens per training row")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--positions", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--eval-examples", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default="", help="continue training this model directory (and its tokenizer)")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else __import__("sys").argv[1:]
    print(json.dumps(train(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
