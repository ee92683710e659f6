"""The external reference for the tokenizer.json files Kiln writes: Hugging Face's `tokenizers` library encodes texts
with them. Reads a JSON list of jobs {"tokenizer": PATH, "texts": [...], "add_special": BOOL} from argv[1] and writes,
to argv[2], one result per job: {"ids": [[...] per text], "decoded": [text of those ids, special tokens skipped]}."""
import json
import sys

from tokenizers import Tokenizer

with open(sys.argv[1], encoding="utf-8") as f:
    jobs = json.load(f)
results = []
for job in jobs:
    tok = Tokenizer.from_file(job["tokenizer"])
    ids = [tok.encode(text, add_special_tokens=job["add_special"]).ids for text in job["texts"]]
    decoded = [tok.decode(i, skip_special_tokens=True) for i in ids]
    results.append({"ids": ids, "decoded": decoded})
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(results, f)
