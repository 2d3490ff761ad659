"""Prompt templates from the paper, in one place.

Two kinds:

* reward-model inputs (:data:`TEMPLATES`, :func:`rm_text`): the text a reward model scores,
  built from a prompt and a response. The paper's code (``rlhfutils/data.py``, after the
  StackLLaMA recipe it builds on) formats WebGPT, Stack Exchange and RLCD pairs as
  ``"Question: " + question + "\\n\\nAnswer: " + response``; hh-rlhf dialogues are already
  formatted and are just concatenated.
* policy prompts (:data:`PROMPT_TEMPLATES`, :func:`policy_prompt`): what the policy sees
  before it generates. The paper uses the Alpaca instruction template for WebGPT and RLCD
  and ``"Question: ...\\n\\nAnswer: "`` for Stack Exchange (§3). ``chatml`` turns an
  hh-rlhf dialogue into ChatML turns for instruct models such as SmolLM2-Instruct
  (:func:`dialogue_to_chatml`; not in the paper, whose policies were base LLaMA).

A template argument is either a registered name or a literal template string containing
``{prompt}`` (and ``{response}`` for reward-model templates). Substitution replaces exactly
the placeholders ``{prompt}``/``{response}``: other braces in a template and any braces in
the texts are left alone (no ``str.format`` surprises).
"""

from __future__ import annotations

import re

QUESTION_ANSWER = "Question: {prompt}\n\nAnswer: {response}"
"""Reward-model input for WebGPT, Stack Exchange and RLCD (the paper's code)."""

DIALOGUE = "{prompt}{response}"
"""Reward-model input for hh-rlhf: the prompt already ends in ``"\\n\\nAssistant:"`` and the
response starts with a space."""

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{prompt}\n\n### Response:")
"""Policy prompt for WebGPT (the paper's ``webgpt_template``: Alpaca, nothing after "Response:")."""

STACK_PROMPT = "Question: {prompt}\n\nAnswer: "
"""Policy prompt for Stack Exchange (the paper, as in StackLLaMA)."""

def rlcd_context(dialogue: str) -> str:
    """The paper's RLCD query (``build_rlcd_promptdata``): an hh-rlhf dialogue from after its
    first ``"Human:"`` to before its last ``"Assistant:"``, stripped; inner turn markers stay."""
    if "Human:" not in dialogue or "Assistant:" not in dialogue:
        raise ValueError(f"not an hh-rlhf dialogue (no Human:/Assistant: turns): {dialogue[:80]!r}")
    start = dialogue.index("Human:") + len("Human:")
    end = dialogue.rindex("Assistant:")
    return dialogue[start:end].strip()


def rlcd_rm_text(prompt: str, response: str) -> str:
    """RLCD's reward-model input in PPO: ``"Question: " + context + "\n\nAnswer: " + response``."""
    return _fill(QUESTION_ANSWER, {"prompt": rlcd_context(prompt), "response": response})


def rlcd_policy_prompt(prompt: str) -> str:
    """RLCD's policy prompt: the Alpaca template around
    ``"Continue the conversation:\n\n" + context + "\n\nAssistant: "``."""
    instruction = "Continue the conversation:\n\n" + rlcd_context(prompt) + "\n\nAssistant: "
    return _fill(ALPACA_PROMPT, {"prompt": instruction})


TEMPLATES = {
    "question_answer": QUESTION_ANSWER,
    "dialogue": DIALOGUE,
    "rlcd": rlcd_rm_text,
}
"""Reward-model input templates by name."""

_TURN = re.compile(r"\n\n(Human|Assistant):")
_CHATML_ROLES = {"Human": "user", "Assistant": "assistant"}


def dialogue_to_chatml(prompt: str) -> str:
    """An hh-rlhf dialogue (``"\\n\\nHuman: … \\n\\nAssistant:"``) as ChatML, ready for the reply.

    Each ``Human``/``Assistant`` turn becomes ``<|im_start|>user|assistant\\n…<|im_end|>\\n``
    and the trailing empty ``Assistant:`` turn becomes the open
    ``<|im_start|>assistant\\n`` the model completes; no system turn is added. A
    prompt without turn markers is one user turn; text before the first marker
    is an error (``ValueError``).
    """
    if not _TURN.search("\n\n" + prompt):
        prompt = "\n\nHuman: " + prompt
    elif not prompt.startswith("\n\n"):
        prompt = "\n\n" + prompt  # "Human: …" written without the leading blank line
    parts = _TURN.split(prompt)
    if parts[0].strip():
        raise ValueError(f"text before the first Human/Assistant turn in {prompt[:80]!r}")
    turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    if turns and turns[-1] == ("Assistant", ""):
        turns = turns[:-1]
    body = "".join(f"<|im_start|>{_CHATML_ROLES[role]}\n{text}<|im_end|>\n" for role, text in turns)
    return body + "<|im_start|>assistant\n"


PROMPT_TEMPLATES = {
    "alpaca": ALPACA_PROMPT,
    "rlcd": rlcd_policy_prompt,
    "stack": STACK_PROMPT,
    "plain": "{prompt}",
    "dialogue": "{prompt}",
    "chatml": dialogue_to_chatml,
}
"""Policy prompt templates by name (a template string, or a function of the raw prompt)."""

_PLACEHOLDER = re.compile(r"\{(prompt|response)\}")


def _resolve(template: str, registry: dict, kind: str, required: tuple) -> str:
    if template in registry:
        return registry[template]
    if isinstance(template, str) and all("{" + name + "}" in template for name in required):
        return template
    fields = " and ".join("{" + name + "}" for name in required)
    raise KeyError(f"unknown {kind} template {template!r}: known names are "
                   f"{sorted(registry)}, or pass a template string containing {fields}")


def _fill(template: str, values: dict) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def rm_text(prompt: str, response: str, template: str = "question_answer") -> str:
    """The reward-model input for ``prompt`` and ``response`` under ``template``.

    ``template``: a name in :data:`TEMPLATES` or a string containing ``{prompt}`` and
    ``{response}``. Unknown names raise ``KeyError`` listing the known ones.
    """
    fmt = _resolve(template, TEMPLATES, "reward-model", ("prompt", "response"))
    if callable(fmt):
        return fmt(prompt, response)
    return _fill(fmt, {"prompt": prompt, "response": response})


def policy_prompt(prompt: str, template: str) -> str:
    """The policy's input text for a raw ``prompt`` under ``template``.

    ``template``: a name in :data:`PROMPT_TEMPLATES` or a string containing ``{prompt}``.
    Unknown names raise ``KeyError`` listing the known ones.
    """
    fmt = _resolve(template, PROMPT_TEMPLATES, "policy prompt", ("prompt",))
    return fmt(prompt) if callable(fmt) else _fill(fmt, {"prompt": prompt})
