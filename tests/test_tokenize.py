"""Tokenizers: id layout, exact round trips on real genomes, N/IUPAC/case, reverse complement,
token <-> base geometry, batching, JSON, bad input, and hypothesis properties."""
from __future__ import annotations

import gzip
import itertools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genoformer.errors import ConfigError
from genoformer.tokenize import KmerTokenizer, NucleotideTokenizer, Tokenizer, load_tokenizer

from .conftest import ECOLI_FASTA, TEST_DATA

COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
KMER_SETTINGS = [(1, 1), (2, 1), (3, 1), (3, 3), (4, 2), (5, 3), (6, 1), (6, 3), (6, 6), (9, 4)]
# k > 8 accumulates codes in uint32; k = 12 is left out of reverse-complement tests (134 MB table).
ROUND_TRIP_SETTINGS = KMER_SETTINGS + [(12, 1), (12, 12)]


def revcomp(seq: str) -> str:
    return seq.translate(COMPLEMENT)[::-1]


def read_fasta_prefix(path: Path, n_bases: int) -> str:
    """First ``n_bases`` of the first record, reading only as many gzip lines as needed."""
    parts, total = [], 0
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith(">"):
                if parts:
                    break
                continue
            parts.append(line.strip())
            total += len(parts[-1])
            if total >= n_bases:
                break
    return "".join(parts)[:n_bases]


@pytest.fixture(scope="module")
def lambda_phage() -> str:
    return read_fasta_prefix(TEST_DATA / "lambda_virus.fa.gz", 10**6)


@pytest.fixture(scope="module")
def ecoli_prefix() -> str:
    return read_fasta_prefix(ECOLI_FASTA, 20_000)


def reference_kmer_ids(seq: str, k: int, stride: int) -> list[int]:
    """Straightforward per-window definition of the documented k-mer ids."""
    ids = []
    for start in range(0, len(seq) - k + 1, stride):
        window = seq[start : start + k].upper()
        if set(window) <= set("ACGT"):
            ids.append(5 + int(window.translate(str.maketrans("ACGT", "0123")), 4))
        else:
            ids.append(5 + 4**k)
    return ids


# --- id layout -------------------------------------------------------------------------------------


def test_nucleotide_ids_are_as_documented():
    tok = NucleotideTokenizer()
    assert (tok.pad_id, tok.mask_id, tok.cls_id, tok.sep_id, tok.unk_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == {0, 1, 2, 3, 4}
    assert tok.encode("ACGTN").tolist() == [5, 6, 7, 8, 9]
    assert (tok.n_id, tok.vocab_size, tok.k, tok.stride) == (9, 10, 1, 1)
    assert tok.encode("ACGT").dtype == np.int64


def test_kmer_ids_are_as_documented():
    tok = KmerTokenizer(3)
    assert tok.encode("AAA").tolist() == [5]
    assert tok.encode("AAC").tolist() == [6]
    assert tok.encode("CAA").tolist() == [5 + 16]
    assert tok.encode("TTT").tolist() == [5 + 63]
    assert (tok.n_id, tok.vocab_size) == (69, 70)
    assert tok.encode("ANA").tolist() == [69]
    # k = 1 shares the nucleotide tokenizer's ids.
    assert KmerTokenizer(1).encode("ACGTNR").tolist() == NucleotideTokenizer().encode("ACGTNR").tolist()


# --- real sequence round trips ---------------------------------------------------------------------


def test_nucleotide_round_trip_on_real_genomes(lambda_phage, ecoli_prefix):
    tok = NucleotideTokenizer()
    assert len(lambda_phage) == 48_502
    for seq in (lambda_phage, ecoli_prefix):
        ids = tok.encode(seq)
        assert len(ids) == len(seq) == tok.n_tokens(len(seq))
        assert tok.decode(ids) == seq


@pytest.mark.parametrize("k,stride", ROUND_TRIP_SETTINGS)
def test_kmer_round_trip_and_reference_on_real_genomes(lambda_phage, ecoli_prefix, k, stride):
    tok = KmerTokenizer(k, stride)
    for seq in (lambda_phage, ecoli_prefix):
        ids = tok.encode(seq)
        covered = tok.n_covered(len(seq))
        assert len(ids) == tok.n_tokens(len(seq)) == (len(seq) - k) // stride + 1
        assert covered == len(seq) - (len(seq) - k) % stride
        assert tok.decode(ids) == seq[:covered]
        assert ids[:300].tolist() == reference_kmer_ids(seq[: (299 * stride) + k], k, stride)


def test_kmer_ids_match_the_sequence_they_span(ecoli_prefix):
    tok = KmerTokenizer(6, 3)
    ids = tok.encode(ecoli_prefix)
    for i, (start, end) in zip(range(0, len(ids), 997), tok.token_spans(len(ids))[::997]):
        assert tok.decode(ids[i : i + 1]) == ecoli_prefix[start:end]


# --- N, IUPAC, case, input types, bad characters -----------------------------------------------------


def test_lower_case_and_iupac():
    tok = NucleotideTokenizer()
    assert tok.encode("acgtn").tolist() == tok.encode("ACGTN").tolist()
    assert set(tok.encode("RYSWKMBDHVryswkmbdhv").tolist()) == {tok.n_id}
    assert tok.decode(tok.encode("AcRt")) == "ACNT"
    unk = NucleotideTokenizer(ambiguous="UNK")
    assert unk.encode("ANRy").tolist() == [5, 9, 4, 4]
    # UNK stands for one unknown base, so decoding keeps positions.
    assert unk.decode(unk.encode("ANRy")) == "ANNN"
    kmer = KmerTokenizer(2)
    assert kmer.encode("acgt").tolist() == kmer.encode("ACGT").tolist()
    assert kmer.encode("ARG").tolist() == [kmer.n_id, kmer.n_id]


def test_kmer_n_windows_and_decode():
    tok = KmerTokenizer(3)
    seq = "ACGTNACGTA"
    ids = tok.encode(seq)
    assert ids.tolist() == reference_kmer_ids(seq, 3, 1)
    assert [i for i, t in enumerate(ids) if t == tok.n_id] == [2, 3, 4]
    # Bases 3 (T) and 5 (A) are each covered by a known k-mer; base 4 only by [N] tokens.
    assert tok.decode(ids) == "ACGTNACGTA"
    # Non-overlapping: an [N] token hides all of its bases.
    tok3 = KmerTokenizer(3, 3)
    assert tok3.decode(tok3.encode("ACGTNACGT")) == "ACGNNNCGT"
    # Only [N] tokens cover bases 2..4 here.
    assert tok.decode(tok.encode("ACNGT")) == "NNNNN"


@pytest.mark.parametrize("tok", [NucleotideTokenizer(), KmerTokenizer(3, 2)], ids=repr)
def test_input_types_give_identical_ids(tok):
    seq = "ACGTTGCANacgt"
    expected = tok.encode(seq).tolist()
    raw = seq.encode()
    for form in (raw, bytearray(raw), memoryview(raw), np.frombuffer(raw, dtype=np.uint8)):
        assert tok.encode(form).tolist() == expected
    with pytest.raises(TypeError, match="uint8"):
        tok.encode(np.array([65, 67], dtype=np.int64))
    with pytest.raises(TypeError, match="list"):
        tok.encode(list(seq))


@pytest.mark.parametrize("tok", [NucleotideTokenizer(), KmerTokenizer(4)], ids=repr)
@pytest.mark.parametrize("bad,position", [("ACG1T", 3), ("AC*GT", 2), ("ACGT GT", 4), ("ACG\nT", 3), ("ACGTé", 4), ("A.CG", 1), ("XACG", 0)])
def test_invalid_characters_name_the_position(tok, bad, position):
    with pytest.raises(ValueError, match=f"at position {position}:"):
        tok.encode(bad)


def test_short_and_empty_inputs():
    tok = KmerTokenizer(6, 2)
    assert tok.encode("").tolist() == [] and tok.encode("ACGTA").tolist() == []
    assert tok.encode("ACGTAC").tolist() == reference_kmer_ids("ACGTAC", 6, 2)
    assert tok.decode([]) == "" and NucleotideTokenizer().decode(np.array([], dtype=np.int64)) == ""
    assert tok.n_tokens(5) == 0 and tok.n_covered(5) == 0 and tok.token_spans(0).shape == (0, 2)


def test_decode_drops_layout_specials_and_checks_ids():
    tok = NucleotideTokenizer()
    assert tok.decode([2, 5, 6, 3, 0, 0]) == "AC"
    kmer = KmerTokenizer(2, 2)
    assert kmer.decode([kmer.cls_id, *kmer.encode("ACGT"), kmer.sep_id, kmer.pad_id]) == "ACGT"
    with pytest.raises(ValueError, match="token id 10 at position 1"):
        tok.decode([5, 10])
    with pytest.raises(ValueError, match="token id -1"):
        kmer.decode([-1])
    with pytest.raises(ValueError, match="integers"):
        tok.decode(np.array([5.0]))
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(np.array([[5, 6]]))


# --- reverse complement -------------------------------------------------------------------------------


def test_nucleotide_reverse_complement(lambda_phage):
    tok = NucleotideTokenizer()
    ids = tok.encode(lambda_phage)
    rc = tok.reverse_complement(ids)
    assert rc.tolist() == tok.encode(revcomp(lambda_phage)).tolist()
    assert tok.reverse_complement(rc).tolist() == ids.tolist()
    assert tok.reverse_complement([2, 5, 9, 7, 3]).tolist() == [3, 6, 9, 8, 2]
    batch = np.stack([ids[:10], ids[10:20]])  # (batch, length): reversed along the last axis
    assert tok.reverse_complement(batch)[1].tolist() == tok.reverse_complement(ids[10:20]).tolist()


@pytest.mark.parametrize("k,stride", KMER_SETTINGS)
def test_kmer_reverse_complement_equals_encoding_the_other_strand(lambda_phage, k, stride):
    tok = KmerTokenizer(k, stride)
    seq = lambda_phage[1000:1000 + tok.n_covered(5000)]  # (len - k) % stride == 0: covered exactly
    seq = seq[:100] + "N" + seq[101:]
    ids = tok.encode(seq)
    assert tok.reverse_complement(ids).tolist() == tok.encode(revcomp(seq)).tolist()
    assert tok.reverse_complement(tok.reverse_complement(ids)).tolist() == ids.tolist()
    specials = [tok.pad_id, tok.mask_id, tok.cls_id, tok.sep_id, tok.unk_id, tok.n_id]
    assert tok.reverse_complement(specials).tolist() == specials[::-1]


def test_kmer_reverse_complement_of_single_tokens():
    tok = KmerTokenizer(4)
    for kmer in ("AACG", "TTTT", "GATC", "ACGG"):
        assert tok.reverse_complement(tok.encode(kmer)).tolist() == tok.encode(revcomp(kmer)).tolist()


# --- token <-> base geometry ---------------------------------------------------------------------------


def test_token_spans_and_coverage_by_hand():
    tok = KmerTokenizer(3, 2)
    assert tok.n_tokens(8) == 3 and tok.n_covered(8) == 7
    assert tok.token_spans(3).tolist() == [[0, 3], [2, 5], [4, 7]]
    assert tok.base_coverage(8).tolist() == [1, 1, 2, 1, 2, 1, 1, 0]
    assert KmerTokenizer(6).base_coverage(12).tolist() == [1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]
    assert NucleotideTokenizer().base_coverage(4).tolist() == [1, 1, 1, 1]


# --- batching --------------------------------------------------------------------------------------------


def test_batch_encode_pads_and_masks():
    tok = KmerTokenizer(2, 2)
    ids, mask = tok.batch_encode(["ACGTAC", "AC", "ACG"])
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool and ids.shape == mask.shape == (3, 3)
    assert ids[0].tolist() == tok.encode("ACGTAC").tolist()
    assert ids[1].tolist() == [tok.encode("AC")[0], tok.pad_id, tok.pad_id]
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, False, False]]
    ids, mask = tok.batch_encode(["AC"], length=4)
    assert ids.shape == (1, 4) and mask.sum().item() == 1
    with pytest.raises(ValueError, match="sequence 1 has 3 tokens, more than length=2"):
        tok.batch_encode(["AC", "ACGTAC"], length=2)
    assert NucleotideTokenizer().batch_encode([])[0].shape == (0, 0)


# --- JSON ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tok", [NucleotideTokenizer(), NucleotideTokenizer(ambiguous="UNK"), KmerTokenizer(6), KmerTokenizer(5, 5)], ids=repr
)
def test_json_save_load_identity(tmp_path, tok):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok) and loaded == tok and loaded.to_dict() == tok.to_dict()
    assert json.loads(path.read_text()) == tok.to_dict()
    assert load_tokenizer(tok.to_dict()) == tok == Tokenizer.from_dict(tok.to_dict())
    seq = "ACGTTGCAANNACGTGGCA"
    assert loaded.encode(seq).tolist() == tok.encode(seq).tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temporary file left


def test_pickles_for_data_loader_workers():
    tok = KmerTokenizer(4, 2)
    tok.reverse_complement([5])  # builds the cached complement table, which travels along
    clone = pickle.loads(pickle.dumps(tok))
    assert clone == tok and clone.encode("ACGTAC").tolist() == tok.encode("ACGTAC").tolist()


def test_json_content():
    assert KmerTokenizer(6, 3).to_dict() == {
        "type": "kmer", "format_version": 1, "k": 6, "stride": 3, "vocab_size": 4102,
    }
    assert NucleotideTokenizer().to_dict() == {
        "type": "nucleotide", "format_version": 1, "k": 1, "stride": 1, "vocab_size": 10, "ambiguous": "N",
    }


@pytest.mark.parametrize(
    "config,message",
    [
        ({"type": "bpe"}, "unknown tokenizer type 'bpe'"),
        ({"k": 3}, "unknown tokenizer type None"),
        ({"type": "kmer", "k": 0}, "k must be between 1 and 12"),
        ({"type": "kmer", "k": 13}, "k must be between 1 and 12"),
        ({"type": "kmer", "k": "6"}, "k must be an integer"),
        ({"type": "kmer", "k": True}, "k must be an integer"),
        ({"type": "kmer", "k": 6, "stride": 0}, "stride must be between 1 and 6"),
        ({"type": "kmer", "k": 3, "stride": 4}, "stride must be between 1 and 3"),
        ({"type": "kmer", "k": 3, "stride": 1.5}, "stride must be an integer"),
        ({"type": "kmer", "k": 3, "lowercase": True}, "unknown kmer tokenizer keys \\['lowercase'\\]"),
        ({"type": "kmer", "k": 3, "vocab_size": 69}, "vocab_size=69 does not match"),
        ({"type": "nucleotide", "k": 3}, "k=3 does not match"),
        ({"type": "nucleotide", "ambiguous": "X"}, "ambiguous must be"),
        ({"type": "kmer", "k": 3, "format_version": 2}, "format_version 2 is not supported"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_configs_raise_config_error(config, message):
    with pytest.raises(ConfigError, match=message):
        load_tokenizer(config) if isinstance(config, dict) else Tokenizer.from_dict(config)


def test_bad_json_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "kmer", ')
    with pytest.raises(ConfigError, match="broken.json: cannot read tokenizer JSON"):
        load_tokenizer(broken)
    with pytest.raises(ConfigError, match="missing.json: cannot read"):
        load_tokenizer(tmp_path / "missing.json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"type": "kmer", "k": 20}))
    with pytest.raises(ConfigError, match="wrong.json: tokenizer k must be between 1 and 12, got 20"):
        load_tokenizer(wrong)
    with pytest.raises(ConfigError):
        KmerTokenizer(4, 5)


# --- properties ------------------------------------------------------------------------------------------

dna = st.text(alphabet="ACGT", max_size=200)
dna_with_n = st.text(alphabet="ACGTNacgtnRY", max_size=200)
tokenizers = st.one_of(
    st.just(NucleotideTokenizer()),
    st.integers(1, 7).flatmap(lambda k: st.builds(KmerTokenizer, st.just(k), st.integers(1, k))),
)


@settings(max_examples=150, deadline=None)
@given(tok=tokenizers, seq=dna)
def test_property_round_trip_covers_the_documented_prefix(tok, seq):
    ids = tok.encode(seq)
    assert len(ids) == tok.n_tokens(len(seq))
    assert tok.decode(ids) == seq[: tok.n_covered(len(seq))]


@settings(max_examples=150, deadline=None)
@given(tok=tokenizers, seq=dna_with_n)
def test_property_encode_matches_reference_and_n_decodes_as_documented(tok, seq):
    ids = tok.encode(seq)
    assert ids.tolist() == reference_kmer_ids(seq, tok.k, tok.stride)
    decoded = tok.decode(ids)
    # A base reads back as itself when some covering token is free of N/IUPAC, else as N.
    upper = seq.upper()
    spans = tok.token_spans(len(ids))
    for position, base in enumerate(decoded):
        known = any(start <= position < end and set(upper[start:end]) <= set("ACGT") for start, end in spans)
        assert base == (upper[position] if known else "N")


@settings(max_examples=150, deadline=None)
@given(tok=tokenizers, data=st.data())
def test_property_reverse_complement_twice_is_identity(tok, data):
    ids = np.array(data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=100)), dtype=np.int64)
    once = tok.reverse_complement(ids)
    assert set(np.flatnonzero(np.isin(once, list(tok.special_ids)))) == set(
        len(ids) - 1 - np.flatnonzero(np.isin(ids, list(tok.special_ids)))
    )
    assert tok.reverse_complement(once).tolist() == ids.tolist()


@settings(max_examples=150, deadline=None)
@given(tok=tokenizers, seq=st.text(alphabet="ACGTN", max_size=200))
def test_property_reverse_complement_equals_other_strand_when_covered(tok, seq):
    seq = seq[: tok.n_covered(len(seq))]
    assert tok.reverse_complement(tok.encode(seq)).tolist() == tok.encode(revcomp(seq)).tolist()


@settings(max_examples=150, deadline=None)
@given(tok=tokenizers, n_bases=st.integers(0, 300))
def test_property_spans_and_coverage(tok, n_bases):
    n_tokens = tok.n_tokens(n_bases)
    spans = tok.token_spans(n_tokens)
    assert spans.tolist() == [[i * tok.stride, i * tok.stride + tok.k] for i in range(n_tokens)]
    coverage = tok.base_coverage(n_bases)
    bases = np.arange(n_bases)
    inside = (spans[:, :1] <= bases) & (bases < spans[:, 1:])  # (tokens, bases)
    assert coverage.tolist() == inside.sum(axis=0).tolist()
    covered = tok.n_covered(n_bases)
    # Every base up to n_covered is covered, the tail after it by nothing, and it is < stride long.
    assert all(coverage[:covered] > 0) and not any(coverage[covered:])
    assert n_bases - covered < (tok.stride if n_bases >= tok.k else tok.k)


def test_all_kmer_ids_decode_to_their_kmer():
    for k in (1, 2, 3):
        tok = KmerTokenizer(k)
        kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
        assert [tok.decode([i]) for i in range(5, tok.n_id)] == kmers
        assert tok.decode([tok.n_id]) == "N" * k
