"""Token alignment across vocabularies (FuseLLM's minimum edit distance) on hand-made vocabularies, then on
the character and BPE tokenizers of the zoo families."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from study.fusion.align import VocabMap, align, dtw, edit_distance, normalise, to_target  # noqa: E402


def test_edit_distance():
    assert edit_distance("", "") == 0
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("ab", "ba") == 2
    assert edit_distance("abc", "abc") == 0
    assert edit_distance("a", "") == 1


def test_markers_read_as_the_characters_they_stand_for():
    assert normalise("Ġletter") == " letter" and normalise("▁the") == " the" and normalise("Ċ") == "\n"


# hand-made pair: a teacher with word pieces, a target with single characters and a few pairs
TEACHER = ["<pad>", "<s>", "ab", "c", " de", "xyz", "q"]
TARGET = ["<pad>", "<s>", "a", "b", "c", " ", "d", "e", "bc", "xy"]


def test_vocab_map_exact_then_minimum_edit_distance_then_prefix_then_id():
    vm = VocabMap(TEACHER, TARGET, skip=frozenset({0}))
    assert vm(1) == 1                    # "<s>" exact
    assert vm(3) == 4                    # "c" exact
    assert vm(2) == 2                    # "ab": a, b, bc all at distance 1; "a" shares its first character
    assert vm(4) == 5                    # " de": " ", d, e at distance 2; " " starts it
    assert vm(5) == 9                    # "xyz": "xy" at distance 1
    assert vm(6) != 0                    # "q" is 1 from every single character, never <pad> (skipped)
    assert not vm.identity and VocabMap(TARGET, TARGET).identity


def test_sequence_alignment_is_monotone_and_covers_both_sides():
    a = ["ab", "c", " de"]
    b = ["a", "bc", " ", "d", "e"]
    path = align(a, b)
    assert path[0] == (0, 0) and path[-1] == (2, 4)
    assert {i for i, _ in path} == {0, 1, 2} and {j for _, j in path} == set(range(5))
    assert all(i2 >= i1 and j2 >= j1 and (i2 - i1) + (j2 - j1) >= 1 for (i1, j1), (i2, j2) in zip(path, path[1:]))
    assert path == [(0, 0), (0, 1), (1, 1), (2, 2), (2, 3), (2, 4)]
    assert align(["x"], ["x"]) == [(0, 0)] and align([], ["x"]) == []
    assert align(["a", "", "b"], ["ab"]) == [(0, 0), (1, 0), (2, 0)]


def test_texts_that_differ_are_aligned_by_edit_distance_warping():
    """FuseLLM's DTW where the two sides do not spell one text (an unknown token, a normalisation)."""
    a, b = ["the", " cat", " sat"], ["the", " <unk>", "at", " sat"]
    assert align(a, b) == dtw(a, b)
    assert dtw(a, b) == [(0, 0), (1, 1), (1, 2), (2, 3)]
    assert dtw(["kitten", "s"], ["sitting", "s"]) == [(0, 0), (1, 1)]


def test_teacher_rows_land_on_the_target_rows_that_start_their_text():
    """Text "abc de": teacher <s> ab c " de"; target <s> a b c " " d e. Teacher row r predicts token r + 1."""
    vm = VocabMap(TEACHER, TARGET, skip=frozenset({0}))
    t_tokens = [1, 2, 3, 4]
    y_tokens = [1, 2, 3, 4, 5, 6, 7]
    top_ids = torch.tensor([[2, 3], [3, 4], [4, 5]])            # predictions of "ab", "c", " de"
    top_lp = torch.log(torch.tensor([[0.6, 0.3], [0.5, 0.4], [0.7, 0.2]]))
    gold = torch.log(torch.tensor([0.6, 0.5, 0.7]))
    ids, lp, gold_ce = to_target(t_tokens, top_ids, top_lp, gold, y_tokens, vm, frozenset({0, 1}), frozenset({0, 1}))
    assert ids.shape == (6, 2) and lp.shape == (6, 2) and gold_ce.shape == (6,)
    # target row 0 predicts "a": the start of teacher "ab" → teacher row 0, mapped (ab→a, c→c)
    assert ids[0].tolist() == [2, 4] and torch.allclose(lp[0], top_lp[0]) and gold_ce[0] == pytest.approx(-gold[0])
    # row 1 predicts "b", inside "ab" (1 : n): one-hot on the gold token
    assert ids[1, 0] == 3 and lp[1, 0] == 0 and torch.isinf(lp[1, 1]) and gold_ce[1] == 0
    # row 2 predicts "c": teacher row 1 (c→c, " de"→" ")
    assert ids[2].tolist() == [4, 5] and torch.allclose(lp[2], top_lp[1])
    # row 3 predicts " ", the start of " de": teacher row 2 (" de"→" ", "xyz"→"xy"); rows 4, 5 inside it
    assert ids[3].tolist() == [5, 9] and torch.allclose(lp[3], top_lp[2])
    assert ids[4, 0] == 6 and ids[5, 0] == 7 and (lp[4:, 0] == 0).all() and (gold_ce[4:] == 0).all()


def test_many_teacher_tokens_for_one_target_token_give_the_first_prediction():
    vm = VocabMap(TARGET, TEACHER, skip=frozenset({0}))  # reversed roles: teacher is the character side
    t_tokens = [1, 2, 3, 4]                                    # <s> a b c
    y_tokens = [1, 2, 3]                                       # <s> ab c
    top_ids = torch.tensor([[2], [3], [4]])                    # predictions of a, b, c
    top_lp = torch.log(torch.tensor([[0.9], [0.8], [0.7]]))
    gold = top_lp[:, 0]
    ids, lp, gold_ce = to_target(t_tokens, top_ids, top_lp, gold, y_tokens, vm, frozenset({0, 1}), frozenset({0, 1}))
    assert ids[:, 0].tolist() == [2, 3]                        # "a"→"ab" predicts "ab"; "c" predicts "c"
    assert lp[:, 0].tolist() == pytest.approx(top_lp[[0, 2], 0].tolist())


def test_identical_vocabulary_and_tokens_are_passed_through():
    vm = VocabMap(TARGET, TARGET)
    top_ids, top_lp = torch.tensor([[2, 3], [4, 5]]), torch.tensor([[-0.1, -2.0], [-0.5, -1.0]])
    ids, lp, gold_ce = to_target([1, 2, 3], top_ids, top_lp, torch.tensor([-0.1, -0.5]), [1, 2, 3], vm,
                                 frozenset({1}), frozenset({1}))
    assert torch.equal(ids, top_ids) and torch.equal(lp, top_lp) and gold_ce.tolist() == pytest.approx([0.1, 0.5])


def test_char_and_bpe_tokenisations_of_the_zoo_align_character_for_character():
    """The zoo's character tokenizer against the BPE family's: every BPE token's text is the concatenation of
    the characters aligned to it, and each maps to the character that starts it."""
    bpe = pytest.importorskip("study.zoo.bpe")
    from study.fusion.align import token_strings
    from study.zoo.tokenizer import build_tokenizer

    char_tok, bpe_tok = build_tokenizer(), bpe.build_bpe_tokenizer()
    c_strings, b_strings = token_strings(char_tok), token_strings(bpe_tok)
    vm = VocabMap(b_strings, c_strings, skip=frozenset({char_tok.pad_token_id}))
    for text in ["Q: letter after k?\nA: l\n", "Q: 12+7=?\nA: 19\n", "Q: capital of Norway?\nA: Oslo\n"]:
        b_ids = [i for i in bpe_tok(text).input_ids if i not in bpe_tok.all_special_ids]
        c_ids = [i for i in char_tok(text).input_ids if i not in char_tok.all_special_ids]
        b_text, c_text = [b_strings[i] for i in b_ids], [c_strings[i] for i in c_ids]
        assert "".join(b_text) == "".join(c_text) == text
        path = align(b_text, c_text)
        pieces: dict[int, str] = {}
        for i, j in path:
            pieces[i] = pieces.get(i, "") + c_text[j]
        assert [pieces[i] for i in range(len(b_text))] == b_text
        for i in b_ids:
            assert c_strings[vm(i)] == b_strings[i][0]
