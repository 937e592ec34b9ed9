"""Reply quality on the default model: do replies end by themselves, and do they loop?

`python -m benchmarks.quality` serves the cached default export (see benchmarks/models.py) with the service's
own sampling defaults and the built-in system prompt, sends 12 fixed chat prompts over HTTP, each as the first
message of a new conversation with a fixed seed, and reports per reply whether it ended by a stop token or at the
length cap, and the count of its most-repeated word 6-gram. Targets: at least 90% of replies end by a stop token;
no reply repeats a 6-gram more than 3 times. Not part of `make test`: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.models import ALIAS, export_folder
from benchmarks.service import running_service

MODEL = f"hf/{ALIAS}"
PROMPTS = (
    "Tell me a long story about a dragon.",
    "Hello!",
    "What is the capital of France?",
    "Explain what a black hole is.",
    "Write a short poem about the sea.",
    "Give me three tips for learning a new language.",
    "How do I make a cup of tea?",
    "What is 12 times 7?",
    "Summarise the plot of Romeo and Juliet.",
    "Write a Python function that reverses a string.",
    "Why is the sky blue?",
    "List five fruits that are red.",
)
STOP_SHARE_TARGET = 0.9
REPEAT_TARGET = 3


@dataclass
class Judged:
    prompt: str
    finish_reason: str | None
    completion_tokens: int | None
    top_6gram_count: int
    text: str


def top_ngram_count(text: str, n: int = 6) -> int:
    """How often the reply's most frequent word n-gram occurs (0 for a reply shorter than n words)."""
    words = text.split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return max(grams.values(), default=0)


def ask(client: httpx.Client, prompt: str, seed: int) -> Judged:
    conversation_id = f"quality-{uuid.uuid4().hex[:12]}"
    created = client.post(
        "/api/v1/conversations", json={"id": conversation_id, "tabName": "quality", "llmModel": MODEL}
    )
    created.raise_for_status()
    body = {"text": prompt, "reply": True, "options": {"seed": seed}}
    answer = client.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
    answer.raise_for_status()
    data = answer.json()
    reply = data["reply"] or {}
    if data.get("error"):
        raise RuntimeError(f"{prompt!r}: {data['error']}")
    return Judged(
        prompt=prompt,
        finish_reason=reply.get("finishReason"),
        completion_tokens=reply.get("completionTokens"),
        top_6gram_count=top_ngram_count(reply.get("text", "")),
        text=reply.get("text", ""),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the 12 prompts to send")
    parser.add_argument("--max-tokens", type=int, default=1024, help="the length cap of a reply")
    parser.add_argument("--json", type=Path, help="also write every reply and figure here")
    args = parser.parse_args()
    export = export_folder("fp32")
    results: list[Judged] = []
    with tempfile.TemporaryDirectory(prefix="beth-quality-") as workdir:
        models = Path(workdir) / "models"
        models.mkdir()
        (models / export.name).symlink_to(export, target_is_directory=True)
        with (
            running_service(Path(workdir) / "service", models, args.max_tokens, greedy=False) as server,
            httpx.Client(base_url=server.url, timeout=1800) as client,
        ):
            for seed, prompt in enumerate(PROMPTS[: args.prompts], start=1):
                judged = ask(client, prompt, seed)
                results.append(judged)
                print(
                    f"{judged.finish_reason or '-':7} tokens {judged.completion_tokens or 0:5} "
                    f"top 6-gram x{judged.top_6gram_count:<3} {prompt}",
                    flush=True,
                )
    stopped = sum(1 for r in results if r.finish_reason == "stop") / len(results)
    worst = max(r.top_6gram_count for r in results)
    print(
        f"\n{MODEL}: {stopped:.0%} of {len(results)} replies ended by a stop token (target >= {STOP_SHARE_TARGET:.0%}); "
        f"most-repeated 6-gram: at most x{worst} per reply (target <= {REPEAT_TARGET})"
    )
    if args.json:
        summary = {"stop_share": stopped, "max_6gram_count": worst, "replies": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
