"""Train the tiny OPT model that ships inside refimpl (refimpl/data/opt-tiny/).

Needs torch, transformers==4.37.2 and the `tokenizers` library (refimpl itself
needs none of them). Deterministic given --seed on the same machine: the corpus
is collected from sorted file lists and a fixed module list, torch runs on one
thread, and the step count is fixed (not a wall-clock budget).

    python golden/train_shipped_model.py            # writes refimpl/data/opt-tiny/
    python golden/train_shipped_model.py --steps 20 --out /tmp/opt-tiny-smoke

Corpus (English prose available offline on a Debian/Ubuntu machine):
  1. pydoc_data.topics: the Python language-reference topics pydoc shows;
  2. docstrings of the Python standard library (fixed module list below,
     with the submodules of its packages), one document per module;
  3. /usr/share/common-licenses/* (one document per distinct file);
  4. /usr/share/doc/*/copyright, keeping only prose paragraphs (DEP-5 header
     fields, copyright-holder lines and e-mail addresses dropped; duplicate
     paragraphs dropped).
Every 20th document (index % 20 == 10 in collection order) is held out.

Model: OPTForCausalLM, hidden 128, 4 layers, 4 heads, ffn 512, 256 positions,
byte-level BPE vocabulary of 4096 with <s>=0 <pad>=1 </s>=2 <unk>=3 like OPT.
Training sequences look like what `refimpl score` feeds the model: </s> first,
then a window of the token stream (documents joined by </s>).
"""
import argparse
import contextlib
import glob
import hashlib
import importlib
import inspect
import io
import json
import math
import os
import pkgutil
import random
import re
import sys
import time
import warnings

# The tokenizers BPE trainer is multi-threaded (rayon); one thread keeps the
# shared 2-core machine free and makes the run reproducible step for step.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import ByteLevelBPETokenizer  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Tokenizer,
    OPTConfig,
    OPTForCausalLM,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "refimpl", "data", "opt-tiny")

# Standard-library modules whose docstrings go into the corpus. Fixed list (no
# sys.stdlib_module_names, which differs between Python versions); modules that
# fail to import on a given machine are skipped and the skip is printed.
STDLIB_MODULES = [
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bdb", "binascii",
    "bisect", "builtins", "bz2", "calendar", "cmath", "cmd", "code", "codecs",
    "codeop", "collections", "colorsys", "compileall", "concurrent", "configparser",
    "contextlib", "contextvars", "copy", "copyreg", "cProfile", "csv", "ctypes",
    "dataclasses", "datetime", "dbm", "decimal", "difflib", "dis", "doctest",
    "email", "enum", "errno", "faulthandler", "filecmp", "fileinput", "fnmatch",
    "fractions", "ftplib", "functools", "gc", "getopt", "getpass", "gettext",
    "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "http",
    "imaplib", "importlib", "inspect", "io", "ipaddress", "itertools", "json",
    "keyword", "linecache", "locale", "logging", "lzma", "mailbox", "marshal",
    "math", "mimetypes", "mmap", "modulefinder", "multiprocessing", "netrc",
    "numbers", "operator", "optparse", "os", "pathlib", "pdb", "pickle",
    "pickletools", "pkgutil", "platform", "plistlib", "poplib", "posixpath",
    "pprint", "profile", "pstats", "pty", "py_compile", "pyclbr", "pydoc",
    "queue", "quopri", "random", "re", "reprlib", "rlcompleter", "runpy", "sched",
    "secrets", "select", "selectors", "shelve", "shlex", "shutil", "signal",
    "site", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat",
    "statistics", "string", "stringprep", "struct", "subprocess", "symtable",
    "sys", "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap",
    "threading", "time", "timeit", "token", "tokenize", "tomllib", "trace",
    "traceback", "tracemalloc", "types", "typing", "unicodedata", "unittest",
    "urllib", "uuid", "venv", "warnings", "wave", "weakref", "webbrowser",
    "wsgiref", "xml", "xmlrpc", "zipapp", "zipfile", "zipimport", "zlib",
    "zoneinfo",
]
# Submodules never imported (side effects, platform-specific, or tests).
SKIP_SUBMODULE = re.compile(r"(^|\.)(test|tests|__main__|idle_test)(\.|$)|_win32|windows_|winreg|msvc")

HELD_OUT_EVERY = 20  # document i is held out when i % 20 == 10
MIN_PARA_CHARS = 200


def _docstrings_of(module):  # module -> list of docstrings (module, its classes, functions, methods)
    objs = [module]
    for name in sorted(vars(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # re-exported from elsewhere: counted where it is defined
        objs.append(obj)
        if inspect.isclass(obj):
            for key, val in sorted(vars(obj).items()):
                if not key.startswith("_") and (inspect.isfunction(val) or inspect.ismethoddescriptor(val)):
                    objs.append(val)
    docs = []
    for obj in objs:
        doc = inspect.getdoc(obj)
        if doc and len(doc) >= 40:
            docs.append(doc)
    return docs


def _import_quietly(name):  # str -> module or None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - some submodules raise SystemExit/ImportError on import
        return None


def stdlib_documents():  # -> list of (source, text)
    names = []
    for top in STDLIB_MODULES:
        mod = _import_quietly(top)
        if mod is None:
            print(f"  skip stdlib module {top} (does not import here)")
            continue
        names.append(top)
        if hasattr(mod, "__path__"):  # a package: add its submodules, sorted
            subs = sorted(m.name for m in pkgutil.walk_packages(mod.__path__, top + ".", onerror=lambda n: None)
                          if not SKIP_SUBMODULE.search(m.name))
            names.extend(subs)
    seen, docs = set(), []
    for name in names:
        mod = _import_quietly(name)
        if mod is None:
            continue
        texts = [d for d in _docstrings_of(mod) if d not in seen]
        seen.update(texts)
        if texts:
            docs.append((f"stdlib:{name}", "\n\n".join(texts)))
    return docs


def pydoc_topic_documents():  # -> list of (source, text)
    from pydoc_data.topics import topics
    return [(f"pydoc-topic:{k}", topics[k].strip()) for k in sorted(topics)]


def license_documents():  # -> list of (source, text); one per distinct file content
    seen, docs = set(), []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if not os.path.isfile(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read().strip()
        key = hashlib.sha256(text.encode()).hexdigest()
        if key not in seen:
            seen.add(key)
            docs.append((path, text))
    return docs


_DEP5_FIELD = re.compile(r"^(Files|Copyright|License|Upstream-Name|Upstream-Contact|Source|Format|Comment"
                         r"|Disclaimer|Files-Excluded|X-[\w-]+):", re.I)
_HOLDER = re.compile(r"copyright|\(c\)|©|@|https?://|\d{4}\s*[-,]", re.I)


def copyright_documents(seen_paragraphs):  # set -> list of (source, text); prose paragraphs only
    docs = []
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        raw = open(path, encoding="utf-8", errors="replace").read()
        kept = []
        for para in re.split(r"\n\s*\n|\n\s*\.\s*\n", raw):
            lines = []
            for line in para.splitlines():
                line = line.strip()
                if not line or line == "." or _DEP5_FIELD.match(line) or _HOLDER.search(line):
                    continue
                lines.append(line)
            text = "\n".join(lines)
            key = " ".join(text.split()).lower()
            letters = sum(c.isalpha() or c.isspace() for c in text)
            if len(text) < MIN_PARA_CHARS or letters < 0.9 * len(text) or key in seen_paragraphs:
                continue
            seen_paragraphs.add(key)
            kept.append(text)
        if kept:
            docs.append((path, "\n\n".join(kept)))
    return docs


def collect_corpus():  # -> list of (source, text), in a fixed order
    docs = pydoc_topic_documents() + stdlib_documents() + license_documents()
    # Paragraphs already present (the common licenses) are not repeated from copyright files.
    seen = set()
    for _, text in docs:
        for para in re.split(r"\n\s*\n", text):
            seen.add(" ".join(para.split()).lower())
    docs += copyright_documents(seen)
    return docs


def split_corpus(docs):  # list -> (train texts, held-out texts)
    train = [t for i, (_, t) in enumerate(docs) if i % HELD_OUT_EVERY != HELD_OUT_EVERY // 2]
    held = [t for i, (_, t) in enumerate(docs) if i % HELD_OUT_EVERY == HELD_OUT_EVERY // 2]
    return train, held


def train_tokenizer(train_texts, out_dir, vocab_size):  # -> GPT2Tokenizer configured like facebook/opt-125m
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    # Special tokens first, so they get ids 0..3 exactly like OPT/RoBERTa's dictionary.
    bpe.train_from_iterator(train_texts, vocab_size=vocab_size, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False)
    os.makedirs(out_dir, exist_ok=True)
    bpe.save_model(out_dir)  # writes vocab.json + merges.txt
    # facebook/opt-125m's tokenizer_config: GPT2Tokenizer, add_bos_token=True, bos = eos = "</s>",
    # pad "<pad>", add_prefix_space False, errors "replace" (opt-125m uses "</s>" as unk too;
    # this vocabulary has a real "<unk>" at id 3, as asked for).
    tok = GPT2Tokenizer(
        os.path.join(out_dir, "vocab.json"), os.path.join(out_dir, "merges.txt"),
        errors="replace", bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        add_prefix_space=False, add_bos_token=True, model_max_length=256,
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in ["<s>", "<pad>", "</s>", "<unk>"]}
    assert ids == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, ids
    return tok


def encode_documents(tok, texts):  # list of str -> list of int lists (no </s> prefix)
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def token_stream(doc_ids, eos_id):  # list of id lists -> 1-D int64 array: doc </s> doc </s> ...
    out = []
    for ids in doc_ids:
        out.extend(ids)
        out.append(eos_id)
    return np.asarray(out, dtype=np.int64)


def sample_batch(stream, rng, batch, seq_len, bos_id):  # -> input_ids [batch, seq_len]
    starts = rng.integers(0, len(stream) - seq_len, size=batch)
    body = np.stack([stream[s:s + seq_len - 1] for s in starts])  # [batch, seq_len - 1]
    bos = np.full((batch, 1), bos_id, dtype=np.int64)
    return torch.from_numpy(np.concatenate([bos, body], axis=1))  # [batch, seq_len]


@torch.no_grad()
def perplexity(model, doc_ids, bos_id, window):  # -> (ppl, n_tokens); each document scored in </s>-led windows
    total_nll, total_n = 0.0, 0
    for ids in doc_ids:
        for s in range(0, len(ids), window - 1):
            chunk = [bos_id] + ids[s:s + window - 1]
            if len(chunk) < 2:
                continue
            x = torch.tensor([chunk])
            logits = model(input_ids=x).logits[0, :-1].float()  # [T-1, V]
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")
            total_nll += nll.item()
            total_n += len(chunk) - 1
    return math.exp(total_nll / total_n), total_n


def shuffled_words(texts, seed):  # list of str -> list of str with each document's words shuffled
    rng = random.Random(seed)
    out = []
    for t in texts:
        words = t.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def build_model(vocab_size, seed):  # -> OPTForCausalLM, freshly initialised
    torch.manual_seed(seed)
    cfg = OPTConfig(
        vocab_size=vocab_size, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, ffn_dim=512,
        max_position_embeddings=256, word_embed_proj_dim=128, do_layer_norm_before=True,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0, activation_function="relu",
        pad_token_id=1, bos_token_id=2, eos_token_id=2, init_std=0.02, tie_word_embeddings=True,
        enable_bias=True, layer_norm_elementwise_affine=True, use_cache=True,
    )
    return OPTForCausalLM(cfg)


def lr_at(step, steps, peak, warmup):  # linear warm-up, cosine decay to 10% of peak
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step at length --seq-len")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--long-every", type=int, default=4,
                    help="every Nth step uses batch/2 sequences of 2*seq-len, so positions 128..255 are trained")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-corpus-chars", type=int, default=4_000_000)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # 2 shared cores; also makes the run bit-reproducible
    torch.manual_seed(args.seed)
    t0 = time.time()

    print("collecting corpus ...")
    docs = collect_corpus()
    kept, n_chars = [], 0  # cap the size, dropping from the end (the copyright prose)
    for src, text in docs:
        if n_chars + len(text) > args.max_corpus_chars:
            break
        kept.append((src, text))
        n_chars += len(text)
    docs = kept
    train_texts, held_texts = split_corpus(docs)
    digest = hashlib.sha256("\x00".join(t for _, t in docs).encode()).hexdigest()
    by_kind = {}
    for src, text in docs:
        kind = src.split(":")[0] if ":" in src else os.path.dirname(src).split("/")[3]
        by_kind[kind] = by_kind.get(kind, 0) + len(text)
    print(f"  {len(docs)} documents, {n_chars} chars, sha256 {digest[:16]}; by source {by_kind}")
    print(f"  train {len(train_texts)} docs / {sum(map(len, train_texts))} chars; "
          f"held out {len(held_texts)} docs / {sum(map(len, held_texts))} chars ({time.time() - t0:.0f}s)")

    print("training tokenizer ...")
    tok = train_tokenizer(train_texts, args.out, args.vocab_size)
    train_ids = encode_documents(tok, train_texts)
    held_ids = encode_documents(tok, held_texts)
    stream = token_stream(train_ids, tok.eos_token_id)
    n_held = sum(map(len, held_ids))
    print(f"  vocab {len(tok)}; train tokens {len(stream)}; held-out tokens {n_held}; "
          f"chars/token {sum(map(len, train_texts)) / len(stream):.2f} ({time.time() - t0:.0f}s)")

    model = build_model(len(tok), args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.default_rng(args.seed)
    warmup = max(1, args.steps // 20)
    model.train()
    t_train, recent = time.time(), []
    for step in range(args.steps):
        if args.long_every and step % args.long_every == args.long_every - 1:
            x = sample_batch(stream, rng, args.batch // 2, 2 * args.seq_len, tok.bos_token_id)
        else:
            x = sample_batch(stream, rng, args.batch, args.seq_len, tok.bos_token_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(loss.item())
        if (step + 1) % 100 == 0 or step == args.steps - 1:
            print(f"  step {step + 1}/{args.steps} loss {np.mean(recent):.4f} "
                  f"lr {opt.param_groups[0]['lr']:.2e} ({time.time() - t_train:.0f}s)", flush=True)
            final_loss, recent = float(np.mean(recent)), []
    train_seconds = time.time() - t_train
    model.eval()

    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    # The slow tokenizer's save_pretrained writes added_tokens.json only when tokens were added
    # beyond vocab.json; the four special tokens live in vocab.json, so nothing extra is expected.

    print("evaluating ...")
    results = {"seed": args.seed, "steps": args.steps, "n_params": n_params,
               "train_tokens": int(len(stream)), "held_out_tokens": n_held,
               "final_train_loss_last100": round(final_loss, 4), "train_seconds": round(train_seconds, 1),
               "corpus_chars": n_chars, "corpus_sha256": digest, "corpus_by_source_chars": by_kind}
    flat = [" ".join(t.split()) for t in held_texts]  # same words, whitespace collapsed to single spaces
    shuf = shuffled_words(held_texts, args.seed)
    for window in (128, 256):
        results[f"held_out_ppl_w{window}"] = round(perplexity(model, held_ids, tok.bos_token_id, window)[0], 3)
    results["held_out_single_spaced_ppl_w128"] = round(
        perplexity(model, encode_documents(tok, flat), tok.bos_token_id, 128)[0], 3)
    results["held_out_shuffled_words_ppl_w128"] = round(
        perplexity(model, encode_documents(tok, shuf), tok.bos_token_id, 128)[0], 3)
    train_sample = train_ids[: len(held_ids)]
    results["train_docs_sample_ppl_w128"] = round(perplexity(model, train_sample, tok.bos_token_id, 128)[0], 3)

    # Reload through the Auto classes, as a user would.
    m2 = AutoModelForCausalLM.from_pretrained(args.out).eval()
    t2 = AutoTokenizer.from_pretrained(args.out)
    sentence = "The license grants you the right to copy and distribute the software."
    enc = t2(sentence, return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == 2, "tokenizer must prepend </s> (id 2) like OPT"
    with torch.no_grad():
        nll = m2(**enc, labels=enc["input_ids"]).loss.item()
    results["sample_sentence"] = sentence
    results["sample_sentence_ppl"] = round(math.exp(nll), 3)
    results["sample_sentence_ids"] = enc["input_ids"][0].tolist()
    results["autotokenizer_class"] = type(t2).__name__
    results["file_bytes"] = {f: os.path.getsize(os.path.join(args.out, f)) for f in sorted(os.listdir(args.out))}
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
