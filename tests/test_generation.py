"""Generation through transformers' `generate`: identical greedy answers to the hand-written loop it
replaced (kept below as the reference), the generation config and its file, streaming, cancelling."""

import copy
import json
import threading
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from siad import SIADConfig
from siad.llm import (STOP_STRING, AnswerStreamer, PromptBuilder, add_lora, answer_text_of, build_generation_config,
                      conversation_segments, generate, generation_settings, load_language_model)
from siad.model import load_generation_config, save_generation_config
from siad.prompts import NORMAL_ANSWER, QUESTION, answer_text
from tests.conftest import build_tiny


# ---------------------------------------------------------------------- the reference: the loop generate replaced
@dataclass
class ReferenceSettings:
    max_new_tokens: int = 64
    min_new_tokens: int = 0


@torch.no_grad()
def reference_generate(llm, tokenizer, inputs, settings: ReferenceSettings) -> tuple[list[str], list[str]]:
    """SIAD's greedy decoding loop before transformers' `generate` (verbatim but for the sampling
    branch, not used with greedy settings, and the stop reasons it also returns: "stop", "eos", "length")."""
    embedding = llm.get_input_embeddings()
    attention_mask = inputs.attention_mask
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    batch = attention_mask.shape[0]
    eos = tokenizer.eos_token_id
    produced = [[] for _ in range(batch)]
    texts = [""] * batch
    finished = [False] * batch
    reasons = ["length"] * batch
    out = llm(inputs_embeds=inputs.inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
              use_cache=True, logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1]
    for step in range(settings.max_new_tokens):
        early = step < settings.min_new_tokens
        if early and eos is not None:
            logits = logits.clone()
            logits[:, eos] = float("-inf")
        tokens = logits.argmax(dim=-1)
        for b in range(batch):
            if finished[b]:
                continue
            token = int(tokens[b])
            if token == eos:
                finished[b] = True
                reasons[b] = "eos"
                continue
            produced[b].append(token)
            texts[b] = tokenizer.decode(produced[b], skip_special_tokens=True)
            if STOP_STRING in texts[b] and not early:
                finished[b] = True
                reasons[b] = "stop"
        if all(finished) or step == settings.max_new_tokens - 1:
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
        position_ids = position_ids[:, -1:] + 1
        out = llm(inputs_embeds=embedding(tokens[:, None]), attention_mask=attention_mask,
                  position_ids=position_ids, cache=cache, use_cache=True, logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1]
    return [text.split(STOP_STRING)[0].strip() for text in texts], reasons


# ---------------------------------------------------------------------- LMs that stop (trained here in a second)
DESCRIPTIONS = ["A bottle.", "A metal nut, round and without flaws of any kind.", "Wood with patterns.",
                "A screw with a sharp tail.", "A pill, white, with print FF and red patterns.", "Three cables.",
                "A capsule.", "Leather, brown."]
ANSWERS = [NORMAL_ANSWER, answer_text(["top left"]), answer_text(["center", "bottom"]), "No.",
           answer_text(["right"]), "Yes.", NORMAL_ANSWER, answer_text(["top"])]


def _trained_lm():
    """A tiny LLaMA taught the answer format: odd rows end their answer with EOS, even rows with `###`."""
    torch.manual_seed(0)
    config = SIADConfig.tiny()
    llm, tok = load_language_model(config)
    sequences, labels = [], []
    for i, (description, answer) in enumerate(zip(DESCRIPTIONS, ANSWERS)):
        prompt = [tok.bos_token_id] + tok(f"### Human: <Img></Img> {description} {QUESTION}\n### Assistant:",
                                          add_special_tokens=False).input_ids
        tail = tok(answer, add_special_tokens=False).input_ids
        tail += [tok.eos_token_id] if i % 2 else tok("\n###", add_special_tokens=False).input_ids
        sequences.append(prompt + tail)
        labels.append([-100] * len(prompt) + tail)
    length = max(map(len, sequences))
    ids = torch.tensor([s + [tok.pad_token_id] * (length - len(s)) for s in sequences])
    targets = torch.tensor([t + [-100] * (length - len(t)) for t in labels])
    optimizer = torch.optim.AdamW(llm.parameters(), lr=5e-3)
    llm.train()
    for _ in range(80):
        loss = llm(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return llm.eval().requires_grad_(False), tok, config


@pytest.fixture(scope="module")
def lms():
    trained, tok, config = _trained_lm()
    with_lora = add_lora(copy.deepcopy(trained), config)
    with torch.no_grad():  # a LoRA that changes the answers (B starts at zero)
        generator = torch.Generator().manual_seed(3)
        for name, p in with_lora.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    torch.manual_seed(1)
    untrained = type(trained)(trained.config)  # never stops: every answer runs to max_new_tokens
    return {"trained": trained, "trained+lora": with_lora.eval(), "random": untrained.eval()}, tok, config


def _conversations(hidden: int, seed: int) -> list[list]:
    generator = torch.Generator().manual_seed(seed)
    convs = []
    for i, description in enumerate(DESCRIPTIONS):
        image = torch.randn(1, hidden, generator=generator) * 0.02
        maps = torch.randn(9, hidden, generator=generator) * 0.02 if i % 3 else None
        turns = [(QUESTION, None)] if i != 5 else [(QUESTION, "Yes."), ("Where is it?", None)]
        convs.append(conversation_segments(image, maps, description, turns))
    return convs


@pytest.mark.slow
@pytest.mark.parametrize("min_new_tokens", [0, 4, 24])
def test_greedy_answers_are_those_of_the_old_loop(lms, min_new_tokens):
    models, tok, config = lms
    reasons_seen: set[str] = set()
    for name, llm in models.items():
        builder = PromptBuilder(tok, llm.get_input_embeddings())
        convs = _conversations(64, seed=len(name))
        gen = generation_settings(build_generation_config(
            config.replace(llm=dict(max_new_tokens=24, min_new_tokens=min_new_tokens)), tok))
        reference = ReferenceSettings(max_new_tokens=24, min_new_tokens=min_new_tokens)
        for batch in (1, 3, 8):  # left padding: the prompts have different lengths
            for start in range(0, len(convs) if batch > 1 else 3, batch):
                inputs = builder.build(convs[start:start + batch], padding_side="left")
                expected, reasons = reference_generate(llm, tok, inputs, reference)
                assert generate(llm, tok, inputs, gen) == expected, (name, batch, start)
                reasons_seen.update(reasons)
        if name == "trained" and min_new_tokens == 0:
            answers = generate(llm, tok, builder.build(convs[:5]), gen)
            assert answers[0] == NORMAL_ANSWER and answers[3] == "No."  # it did learn to stop
    # every way an answer ends was exercised (with min_new_tokens = max_new_tokens, none can stop early)
    assert reasons_seen == ({"length"} if min_new_tokens == 24 else {"stop", "eos", "length"})


@pytest.mark.slow
def test_min_new_tokens_equal_to_max_gives_exactly_that_many_tokens(lms):
    models, tok, config = lms
    llm = models["trained"]
    builder = PromptBuilder(tok, llm.get_input_embeddings())
    inputs = builder.build(_conversations(64, seed=0)[:4])
    gen = generation_settings(build_generation_config(config.replace(llm=dict(max_new_tokens=12, min_new_tokens=12)), tok))
    assert gen.stop_strings is None and gen.min_new_tokens == gen.max_new_tokens == 12
    out = llm.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask, generation_config=gen,
                       tokenizer=tok)
    assert out.shape == (4, 12) and not (out == tok.eos_token_id).any()
    # below max_new_tokens the stop string stays on: a trained answer stops at once
    short = generation_settings(build_generation_config(config.replace(llm=dict(max_new_tokens=24, min_new_tokens=2)), tok))
    assert short.stop_strings == STOP_STRING
    first = llm.generate(inputs_embeds=inputs.inputs_embeds[:1], attention_mask=inputs.attention_mask[:1],
                         generation_config=short, tokenizer=tok)
    assert first.shape[1] < 24


@pytest.mark.slow
def test_generation_settings_cap_and_the_base_lm_config_is_ignored(lms):
    models, tok, config = lms
    base = build_generation_config(config.replace(llm=dict(max_new_tokens=20, min_new_tokens=5)), tok)
    capped = generation_settings(base, 3)
    assert (capped.max_new_tokens, capped.min_new_tokens, capped.stop_strings) == (3, 3, None)
    assert (base.max_new_tokens, base.min_new_tokens) == (20, 5)  # a copy
    assert generation_settings(base, 77).max_new_tokens == 20
    assert not base.do_sample and base.num_beams == 1 and base.repetition_penalty == 1.0
    assert base.eos_token_id == tok.eos_token_id and base.stop_strings == STOP_STRING
    sampling = build_generation_config(config.replace(llm=dict(do_sample=True, temperature=0.7, top_p=0.9)), tok)
    assert (sampling.do_sample, sampling.temperature, sampling.top_p, sampling.top_k) == (True, 0.7, 0.9, 0)
    # a base LM whose own generation config samples and penalises repeats: SIAD's answers stay greedy
    llm = models["random"]
    builder = PromptBuilder(tok, llm.get_input_embeddings())
    inputs = builder.build(_conversations(64, seed=2)[:3])
    gen = generation_settings(build_generation_config(config, tok))
    before = generate(llm, tok, inputs, gen)
    saved = llm.generation_config
    try:
        llm.generation_config = saved.__class__(do_sample=True, temperature=5.0, top_k=3, repetition_penalty=3.0,
                                                no_repeat_ngram_size=1)
        assert generate(llm, tok, inputs, gen) == before
    finally:
        llm.generation_config = saved


@pytest.mark.slow
def test_a_set_cancel_event_stops_after_one_token(lms):
    models, tok, config = lms
    llm = models["random"]
    builder = PromptBuilder(tok, llm.get_input_embeddings())
    inputs = builder.build(_conversations(64, seed=4)[:2])
    gen = generation_settings(build_generation_config(config.replace(llm=dict(max_new_tokens=16, min_new_tokens=16)), tok))
    sequences = []
    original = llm.generate

    def spy(*args, **kwargs):
        sequences.append(original(*args, **kwargs))
        return sequences[-1]

    llm.generate = spy
    try:
        event = threading.Event()
        generate(llm, tok, inputs, gen, cancel=event)
        event.set()
        generate(llm, tok, inputs, gen, cancel=event)
    finally:
        del llm.generate
    assert [s.shape[1] for s in sequences] == [16, 1]


@pytest.mark.slow
def test_stage_timer_sees_prefill_and_decode(lms):
    from siad.profiling import StageTimer

    models, tok, config = lms
    llm = models["random"]
    builder = PromptBuilder(tok, llm.get_input_embeddings())
    timer = StageTimer()
    generate(llm, tok, builder.build(_conversations(64, seed=5)[:2]),
             generation_settings(build_generation_config(config.replace(llm=dict(max_new_tokens=6, min_new_tokens=6)), tok)),
             timer=timer)
    assert timer.calls == {"llm_prefill": 1, "llm_decode": 1}
    assert timer.seconds["llm_prefill"] > 0 and timer.seconds["llm_decode"] > 0


# ---------------------------------------------------------------------- streaming
def test_answer_streamer_grows_to_the_answer_and_hides_the_stop_string(lms):
    _, tok, _ = lms
    text = "Yes, in C# and F##, at the top ✓.\n### Human: more"
    ids = tok(text, add_special_tokens=False).input_ids
    streamer = AnswerStreamer(tok)
    streamer.put(torch.zeros(1, 0, dtype=torch.long))  # the prompt (inputs_embeds: no ids)
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    items = list(streamer)
    final = answer_text_of(text)
    assert final == "Yes, in C# and F##, at the top ✓." and items[-1] == final
    assert len(items) > 3 and len(set(items)) == len(items)
    for item in items:
        assert final.startswith(item) and "\ufffd" not in item and not item.endswith("#") or item == final
    with pytest.raises(ValueError, match="one answer"):
        streamer.put(torch.tensor([1, 2]))


def test_answer_streamer_hands_over_an_error(lms):
    streamer = AnswerStreamer(lms[1])
    streamer.fail(RuntimeError("out of memory"))
    with pytest.raises(RuntimeError, match="out of memory"):
        list(streamer)


def test_generate_streams_the_same_answer(lms):
    models, tok, config = lms
    for name in ("trained", "random"):
        llm = models[name]
        builder = PromptBuilder(tok, llm.get_input_embeddings())
        gen = generation_settings(build_generation_config(config.replace(llm=dict(max_new_tokens=24)), tok))
        for conv in _conversations(64, seed=6)[:4]:
            inputs = builder.build([conv])
            streamer = AnswerStreamer(tok, timeout=30)
            answer = generate(llm, tok, inputs, gen, streamer=streamer)[0]
            items = list(streamer)
            assert items and items[-1] == answer
            assert all(answer.startswith(item) for item in items)


# ---------------------------------------------------------------------- the model's generation config and its file
def test_model_generation_config_round_trips_through_a_folder(tmp_path):
    model = build_tiny(0, llm=dict(max_new_tokens=16, min_new_tokens=2)).eval()
    assert model.generation_config.max_new_tokens == 16 and model.generation_config.min_new_tokens == 2
    assert load_generation_config(model, tmp_path) is None  # no file: the config's settings stay
    path = save_generation_config(model, tmp_path)
    assert path == tmp_path / "generation_config.json"
    data = json.loads(path.read_text())
    assert data["max_new_tokens"] == 16 and data["stop_strings"] == STOP_STRING and data["do_sample"] is False
    # an edited file takes effect in every answer of a freshly built model
    data.update(max_new_tokens=3, min_new_tokens=3)
    path.write_text(json.dumps(data))
    other = build_tiny(0, llm=dict(max_new_tokens=16)).eval()
    loaded = load_generation_config(other, tmp_path)
    assert loaded is other.generation_config and loaded.max_new_tokens == 3
    lengths = []
    original = other.llm.generate

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        lengths.append(out.shape[1])
        return out

    other.llm.generate = spy
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    other.detect([image], "bottle")
    other.chat(image, "bottle", [], "Where?")
    assert lengths == [3, 3, 3]


def test_a_broken_generation_config_file_is_refused(tmp_path):
    model = build_tiny(0)
    (tmp_path / "generation_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="generation_config.json"):
        load_generation_config(model, tmp_path)
    for limit in (0, 10**9):  # the tiny LM has 512 positions
        (tmp_path / "generation_config.json").write_text(json.dumps({"max_new_tokens": limit}))
        with pytest.raises(ValueError, match="generation_config.json"):
            load_generation_config(model, tmp_path)
    assert model.generation_config.max_new_tokens == model.config.llm.max_new_tokens  # unchanged


def test_greedy_left_padded_batch_equals_single_runs(lms):
    models, tok, config = lms
    gen = generation_settings(build_generation_config(config.replace(llm=dict(max_new_tokens=16)), tok))
    for llm in models.values():
        builder = PromptBuilder(tok, llm.get_input_embeddings())
        convs = _conversations(64, seed=7)
        both = generate(llm, tok, builder.build(convs), gen)
        assert both == [generate(llm, tok, builder.build([c]), gen)[0] for c in convs]
