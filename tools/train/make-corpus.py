#!/usr/bin/python3
# Rebuilds the bundled model's corpus and tokenizer from Debian's bible-kjv-text package.
#
# Usage: tools/train/make-corpus.py [OUTDIR]     (default: .carry/train in the repository)
#
# Needs: apt-get (to download the two .deb files), dpkg, and python3-sentencepiece and
# python3-numpy from Debian 12. Nothing is installed: both packages are unpacked under a
# temporary directory and the package's own `bible` program (from bible-kjv) prints the text
# out of the package's compressed data file (bible-kjv-text: /usr/lib/bible.data).
#
# Writes to OUTDIR:
#   train.txt val.txt test.txt   plain text, one chapter per block: "Book N" line, then one verse
#                                a line (verse numbers dropped), blank line between chapters
#   tokenizer.model tokenizer.vocab  SentencePiece BPE, 4096 pieces, trained on train.txt only
#   train.bin val.bin test.bin   uint16 token ids: each chapter encoded alone, BOS before each
#   meta.json                    package versions, split (which chapters), sizes, hashes
#
# Split (by whole chapters, numbered 0..1188 in canonical order): chapter i goes to val if
# i % 50 == 25 (24 chapters, ~2%, used for early stopping / model selection), to test if
# i % 100 == 50 (12 chapters, ~1%, never looked at during training: the reported perplexity),
# everything else to train.

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import sentencepiece as spm

VOCAB_SIZE = 4096
PACKAGES = ("bible-kjv-text", "bible-kjv")


def split_of(i):
        if i % 50 == 25:
                return "val"
        if i % 100 == 50:
                return "test"
        return "train"


def fetch_text(tmp):
        versions = {}
        for p in PACKAGES:
                subprocess.run(["apt-get", "download", "-q", p], cwd=tmp, check=True,
                               stdout=subprocess.DEVNULL)
        for deb in sorted(os.listdir(tmp)):
                if not deb.endswith(".deb"):
                        continue
                path = os.path.join(tmp, deb)
                name = subprocess.run(["dpkg-deb", "-f", path, "Package"], check=True,
                                      capture_output=True, text=True).stdout.strip()
                ver = subprocess.run(["dpkg-deb", "-f", path, "Version"], check=True,
                                     capture_output=True, text=True).stdout.strip()
                versions[name] = {"version": ver, "deb": deb,
                                  "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}
                subprocess.run(["dpkg", "-x", path, os.path.join(tmp, "root")], check=True)
        root = os.path.join(tmp, "root")
        out = subprocess.run([os.path.join(root, "usr/bin/bible"),
                              "-p", os.path.join(root, "usr/lib"), "-d", "bible.data",
                              "-l100000", "gen1:1-rev22:21"],
                             check=True, capture_output=True, text=True).stdout
        copyright_text = open(os.path.join(root, "usr/share/doc/bible-kjv-text/copyright")).read()
        return out, versions, copyright_text


def parse(out):
        chapters = []   # (title, [verses])
        head = re.compile(r"^((?:[1-3] )?[A-Za-z][A-Za-z ]*) ([0-9]+)$")
        verse = re.compile(r"^ +([0-9]+) (.*)$")
        for line in out.split("\n"):
                if not line.strip():
                        continue
                m = verse.match(line)
                if m:
                        assert chapters and int(m.group(1)) == len(chapters[-1][1]) + 1, line
                        chapters[-1][1].append(m.group(2).strip())
                        continue
                m = head.match(line)
                assert m, "unexpected line: %r" % line
                chapters.append((line.strip(), []))
        assert len(chapters) == 1189, len(chapters)
        assert sum(len(v) for _, v in chapters) == 31102
        return chapters


def chapter_text(title, verses):
        return title + "\n" + "\n".join(verses) + "\n"


def main():
        here = os.path.dirname(os.path.abspath(__file__))
        outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "../../.carry/train")
        outdir = os.path.abspath(outdir)
        os.makedirs(outdir, exist_ok=True)

        with tempfile.TemporaryDirectory() as tmp:
                out, versions, copyright_text = fetch_text(tmp)
        chapters = parse(out)

        texts = {"train": [], "val": [], "test": []}
        names = {"train": [], "val": [], "test": []}
        for i, (title, verses) in enumerate(chapters):
                s = split_of(i)
                texts[s].append(chapter_text(title, verses))
                names[s].append(title)
        for s, chs in texts.items():
                with open(os.path.join(outdir, s + ".txt"), "w") as f:
                        f.write("\n".join(chs))

        # Relative paths (the trainer stores them in the model file): same bytes for any OUTDIR.
        prefix = os.path.join(outdir, "tokenizer")
        os.chdir(outdir)
        spm.SentencePieceTrainer.train(
                input="train.txt", model_prefix="tokenizer",
                model_type="bpe", vocab_size=VOCAB_SIZE, character_coverage=1.0,
                byte_fallback=True, split_digits=True, split_by_unicode_script=True,
                split_by_whitespace=True, split_by_number=True, max_sentencepiece_length=16,
                normalization_rule_name="identity", add_dummy_prefix=True,
                remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
                num_threads=2, input_sentence_size=0, shuffle_input_sentence=False,
                minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        assert sp.get_piece_size() == VOCAB_SIZE

        meta = {"packages": versions, "copyright": copyright_text,
                "format": "per chapter: 'Book N' line, one verse per line, blank line between",
                "split_rule": "chapter index i (0..1188): val if i%50==25, test if i%100==50",
                "vocab_size": VOCAB_SIZE, "splits": {}}
        for s, chs in texts.items():
                ids = []
                for t in chs:
                        ids.append(sp.bos_id())
                        ids.extend(sp.encode(t))
                arr = np.array(ids, dtype=np.uint16)
                arr.tofile(os.path.join(outdir, s + ".bin"))
                raw = open(os.path.join(outdir, s + ".txt"), "rb").read()
                meta["splits"][s] = {"chapters": len(chs), "bytes": len(raw),
                                     "tokens": int(arr.size),
                                     "sha256": hashlib.sha256(raw).hexdigest()}
                if s != "train":
                        meta["splits"][s]["names"] = names[s]
        meta["tokenizer_sha256"] = hashlib.sha256(
                open(prefix + ".model", "rb").read()).hexdigest()
        with open(os.path.join(outdir, "meta.json"), "w") as f:
                json.dump(meta, f, indent=1)
        for s, m in meta["splits"].items():
                print("%-5s %4d chapters %8d bytes %8d tokens" % (s, m["chapters"], m["bytes"],
                                                               m["tokens"]))
        print("wrote", outdir)


if __name__ == "__main__":
        main()
