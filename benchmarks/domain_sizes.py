"""Lines and tokens of the in-domain text at each size of a data-efficiency sweep (issue 6): the
same seeded sample a DAPT or TARTAN run draws (pretrain.seed), counted with the model's tokenizer
(special tokens excluded, before truncation to data.max_length, and after it).

    python benchmarks/domain_sizes.py --data-dir ../shared/data [--domain domain/cs.txt]
        [--end-task citation_intent] [--sizes 1x 10x 100x] [--seed 0] [--model minilm] [--max-length 256]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from transformers import AutoTokenizer

from tartan.data.labelled import load_labelled_task
from tartan.data.unlabelled import parse_size, read_texts, sample_texts
from tartan.models.body import resolve_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--domain", default="domain/cs.txt")
    parser.add_argument("--end-task", default="citation_intent")
    parser.add_argument("--sizes", nargs="+", default=["1x", "10x", "100x"])
    parser.add_argument("--seed", type=int, default=0, help="pretrain.seed, which draws the sample")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--trust-remote-code", action="store_true", help="for a model that ships its own code")
    args = parser.parse_args()

    train_size = len(load_labelled_task(args.data_dir, args.end_task, splits=("train",)).splits["train"])
    path = Path(args.data_dir) / args.domain
    texts = read_texts(path)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model), trust_remote_code=args.trust_remote_code)
    print(f"{args.end_task}: |Train| = {train_size:,}; {path}: {len(texts):,} non-blank lines\n")
    print("| size | lines | tokens | tokens after truncation to", args.max_length, "|")
    print("|---|---|---|---|")
    for size in args.sizes:
        sample = sample_texts(texts, parse_size(size, train_size), args.seed, str(path))
        lengths = [len(ids) for ids in tokenizer(sample, add_special_tokens=False)["input_ids"]]
        # each sequence holds [CLS] and [SEP] (or <s>, </s>) besides its text
        kept = sum(min(n, args.max_length - 2) for n in lengths)
        print(f"| {size} | {len(sample):,} | {sum(lengths):,} | {kept:,} |")


if __name__ == "__main__":
    main()
