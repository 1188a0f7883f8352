"""Generation: backends that sample assistant turns, tools, and the batched agent rollout loop.

Heavy libraries (torch, transformers, vllm, openai) are imported only when a backend is built.
"""

from .base import (
    ChatBackend,
    SamplingParams,
    ToolFormat,
    Turn,
    detect_tool_format,
    parse_tool_calls,
    render_prompt,
)
from .hf import TransformersBackend, load_student
from .openai_backend import OpenAIChatBackend
from .rollouts import RolloutStats, rollout
from .tools import Tool, ToolBox, calculator_tool
from .vllm_backend import VLLMBackend

__all__ = [
    "ChatBackend",
    "OpenAIChatBackend",
    "RolloutStats",
    "SamplingParams",
    "Tool",
    "ToolBox",
    "ToolFormat",
    "TransformersBackend",
    "Turn",
    "VLLMBackend",
    "calculator_tool",
    "detect_tool_format",
    "load_student",
    "parse_tool_calls",
    "render_prompt",
    "rollout",
]
