"""Train the small causal LM that ships as SayCan's default language model (models/saycan_lm).

A byte-level BPE tokenizer and a Llama-style (or GPT-2-style) network are both built here
from the generated corpus (ros_vla.saycan.corpus); nothing is downloaded. Each training
document is the planner's preamble followed by 1-N corpus examples, half of them with
their Explanation lines, so the few-shot prompt the planner uses is in distribution.

Colour binding (copying "red" from the Human line into "pick up the red block ...") is
the hard part: with plain cross-entropy it did not emerge in 800-1600 steps (the loss
sits on a plateau while the model guesses colours). What made it form here:
- the loss on colour tokens in the robot's lines is weighted up (--copy-weight 5);
- a curriculum: the first --curriculum-steps train on short documents (1-2 examples) of
  the families whose first step names the instruction's objects;
- a higher learning rate with warm-up (3e-3, 100 steps, cosine to 10 %), more heads (8);
- and simply more steps (thousands): binding accuracy rises over the whole run.
Every colour in the palette is one token of the tokenizer (checked by the tests).

Measured on held-out generated examples (different corpus seeds), scored exactly as the
planner scores (sum of log-probabilities after the few-shot prompt): colour binding
(seed + 2000: is the first object step ranked first over the scene's whole library?),
and top-1 next-step / whole-plan accuracy over all families (seed + 1000).

    python -m ros_vla.saycan.train_lm --out models/saycan_lm --stop-after 3744
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
from ros_vla.saycan.corpus import BINDING_FAMILIES, CorpusGenerator, Example, document, few_shot_examples

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


COLOUR_FAMILIES = {f: w for f, w in BINDING_FAMILIES.items() if f != "refuse"}


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


def binding_examples(seed: int, count: int) -> tuple[list[Example], CorpusGenerator]:
    """Held-out examples whose first object step names objects from the instruction."""
    generator = CorpusGenerator(seed)
    return [generator.example(COLOUR_FAMILIES) for _ in range(count)], generator


def binding_accuracy(lm, examples: list[Example], generator: CorpusGenerator) -> float:
    """Colour binding: is the first step that acts on an object (after an optional "go to the
    table") ranked first over the example scene's whole library? It names the instruction's
    block and bowl colours, so a model that does not copy them is near chance (1/2-1/4 per
    colour, a few percent for a pick-and-place of 2-4 blocks x 1-3 bowls)."""
    head = few_shot_examples(with_explanation=False)
    right = 0
    for e in examples:
        blocks = [o.replace(" ", "_") for o in e.objects if o.endswith("block")]
        bowls = [o.replace(" ", "_") for o in e.objects if o.endswith("bowl")]
        texts = generator.library(blocks, bowls).texts
        k = 1 if e.plan[0] == "go to the table" else 0
        scores = lm.score(head + prompt.query(e.objects, e.instruction, e.plan[:k]),
                          [prompt.step_option(t) for t in texts])
        right += texts[int(np.argmax(scores))] == e.plan[k]
    return right / len(examples)


def colour_token_ids(tokenizer, colours: list[str]) -> list[int]:
    """Ids of " red", " green", ... where each is one token (the byte-level BPE learns them as words)."""
    ids = []
    for colour in colours:
        piece = tokenizer(" " + colour, add_special_tokens=False)["input_ids"]
        if len(piece) == 1:
            ids.append(piece[0])
    return ids


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
        warmup = args.warmup if args.warmup >= 0 else (20 if args.init else 100)
        if step < warmup:
            return args.lr * (step + 1) / warmup
        cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))
        return args.lr * (args.min_lr + (1 - args.min_lr) * cosine)

    colours = torch.tensor(colour_token_ids(tokenizer, generator.colors))
    held_binding, held_generator = binding_examples(args.seed + 2000, args.binding_examples)
    binding_curve = []

    def measure_binding(step: int) -> float:
        model.eval()
        accuracy = binding_accuracy(HFCausalLM("", model=model, tokenizer=tokenizer), held_binding, held_generator)
        model.train()
        binding_curve.append([step, round(accuracy, 3)])
        return accuracy

    model.train()
    losses, colour_losses = [], []
    stream: list[int] = []
    targets: list[int] = []
    for step in range(args.steps):
        curriculum = step < args.curriculum_steps
        if step == args.curriculum_steps and step > 0:
            stream, targets = [], []  # the full mix from here on
        # Documents packed end to end (each closed by the end-of-text token): no padding.
        while len(stream) < args.batch * args.context:
            for _ in range(64):
                if curriculum:  # short documents of the families that name objects: copying is what lowers the loss
                    examples = [generator.example(BINDING_FAMILIES) for _ in range(rng.randint(1, 2))]
                else:
                    examples = [generator.example() for _ in range(rng.randint(1, args.max_examples))]
                ids, labels = encode_document(tokenizer, examples, rng.random() < args.explanation_share)
                stream += ids
                targets += labels
        size = args.batch * args.context
        ids = torch.tensor(stream[:size]).view(args.batch, args.context)
        labels = torch.tensor(targets[:size]).view(args.batch, args.context)
        stream, targets = stream[size:], targets[size:]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        logits = model(ids).logits[:, :-1]
        target = labels[:, 1:]
        token_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                       ignore_index=-100, reduction="none").view_as(target)
        learned = (target != -100).float()
        is_colour = torch.isin(target, colours).float() * learned
        # Colour tokens in what the robot writes carry the binding; weighting them up gives the copy
        # circuit more gradient than the (easily learned) plan templates around them.
        weight = learned + (args.copy_weight - 1.0) * is_colour
        loss = (token_loss * weight).sum() / weight.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float((token_loss * learned).sum() / learned.sum()))
        colour_losses.append(float((token_loss * is_colour).sum() / is_colour.sum().clamp(min=1)))
        if step % 50 == 0 or step == args.steps - 1:
            line = (f"step {step:5d}  loss {np.mean(losses[-50:]):.4f}  colour-token loss "
                    f"{np.mean(colour_losses[-50:]):.3f}  lr {learning_rate(step):.2e}")
            if args.eval_every and (step % args.eval_every == 0 or step == args.steps - 1):
                line += f"  binding {measure_binding(step):.2f}"
            print(f"{line}  {time.perf_counter() - started:6.0f} s", flush=True)
        if args.save_every and step and step % args.save_every == 0:
            model.save_pretrained(Path(args.out) / "checkpoint")
            tokenizer.save_pretrained(Path(args.out) / "checkpoint")
        if args.max_minutes and time.perf_counter() - started > 60 * args.max_minutes:
            print(f"time limit: stopping after step {step}", flush=True)
            break
        if args.stop_after and step + 1 >= args.stop_after:
            break
    steps_run = step + 1
    train_s = time.perf_counter() - started
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    held_out = CorpusGenerator(args.seed + 1000)
    measured = next_step_accuracy(HFCausalLM(out, model=model, tokenizer=tokenizer),
                                  [held_out.example() for _ in range(args.eval_examples)], held_out)
    binding = measure_binding(steps_run) if args.binding_examples else None
    result = {"parameters": params, "vocab_size": len(tokenizer), "train_steps": steps_run, "batch": args.batch,
              "context": args.context, "arch": model.config.model_type, "layers": model.config.num_hidden_layers,
              "heads": model.config.num_attention_heads, "width": model.config.hidden_size,
              "lr": args.lr, "copy_weight": args.copy_weight, "curriculum_steps": args.curriculum_steps,
              "final_loss": float(np.mean(losses[-50:])),
              "final_colour_token_loss": float(np.mean(colour_losses[-50:])),
              "train_wall_s": round(train_s, 1), **measured,
              "binding_accuracy": binding, "binding_examples": args.binding_examples, "binding_curve": binding_curve,
              "command": "python -m ros_vla.saycan.train_lm " + " ".join(args.argv)}
    (out / "training.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train SayCan's small language model on the generated corpus")
    parser.add_argument("--out", default="models/saycan_lm")
    parser.add_argument("--steps", type=int, default=4000, help="length of the learning-rate schedule")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--context", type=int, default=256, help="tokens per training row")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--positions", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--eval-examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default="", help="continue training this model directory (and its tokenizer)")
    parser.add_argument("--warmup", type=int, default=-1, help="warm-up steps (-1: 100, or 20 with --init)")
    parser.add_argument("--min-lr", type=float, default=0.1, help="final learning rate as a fraction of --lr")
    parser.add_argument("--copy-weight", type=float, default=5.0,
                        help="loss weight of colour tokens in the robot's lines (1 = plain cross-entropy)")
    parser.add_argument("--curriculum-steps", type=int, default=800,
                        help="first train this many steps on short documents of object-naming families")
    parser.add_argument("--max-examples", type=int, default=3, help="corpus examples per training document: 1..N")
    parser.add_argument("--explanation-share", type=float, default=0.5,
                        help="share of documents with Explanation lines")
    parser.add_argument("--binding-examples", type=int, default=80,
                        help="held-out examples for the colour-binding accuracy (corpus seed + 2000)")
    parser.add_argument("--eval-every", type=int, default=200,
                        help="measure colour binding every N steps (0: at the end)")
    parser.add_argument("--save-every", type=int, default=0, help="save OUT/checkpoint every N steps")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop training after this wall time")
    parser.add_argument("--stop-after", type=int, default=0,
                        help="stop after this many steps (the learning-rate schedule still spans --steps)")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else __import__("sys").argv[1:]
    print(json.dumps(train(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
