"""A small synthetic task for the end-to-end fine-tuning test and `scripts/tune-demo`:
classify the sentiment of a templated review and answer with exactly one word, `positive` or
`negative`. SmolLM2-135M-Instruct answers with a sentence (or the wrong word) out of the box,
so exact-match accuracy starts low; the held-out split uses subject/adjective pairs never
seen in training, so a rise there is generalisation of the rule, not memorisation.
"""
import json
import random

SUBJECTS = ["The movie", "This phone", "The hotel room", "Our waiter", "The concert", "This book", "The new update",
            "The pasta", "The customer service", "This laptop", "The museum tour", "The headphones", "The train ride",
            "This coffee", "The garden", "The sequel"]
POSITIVE = ["wonderful", "delightful", "excellent", "fantastic", "superb", "lovely", "brilliant", "charming", "amazing", "great"]
NEGATIVE = ["terrible", "awful", "dreadful", "horrible", "disappointing", "boring", "broken", "rude", "miserable", "bad"]
FRAMES = ["{s} was {a}.", "Honestly, {s} was {a}.", "{s} was {a}, I have to say.", "I think {s} was {a}."]
QUESTION = "Is this review positive or negative? Answer with one word.\n\nReview: {r}"


def split(seed=7):
    """(train, held_out) lists of (review, label); held-out pairs (subject, adjective) never occur in training."""
    rng = random.Random(seed)
    pairs = [(s, a, "positive") for s in SUBJECTS for a in POSITIVE] + [(s, a, "negative") for s in SUBJECTS for a in NEGATIVE]
    rng.shuffle(pairs)
    held, train = pairs[:40], pairs[40:]
    make = lambda rows: [(rng.choice(FRAMES).format(s=s, a=a).capitalize(), label) for s, a, label in rows]
    return make(train), make(held)


def chat_record(review, label):
    return {"messages": [{"role": "user", "content": QUESTION.format(r=review)}, {"role": "assistant", "content": label}]}


def write(path, rows):
    with open(path, "w") as f:
        for review, label in rows:
            f.write(json.dumps(chat_record(review, label)) + "\n")


if __name__ == "__main__":
    import sys
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    train, held = split()
    write(f"{out}/train.jsonl", train[:96])
    write(f"{out}/heldout.jsonl", held)
    print(f"{out}/train.jsonl: 96 examples; {out}/heldout.jsonl: {len(held)} examples")
