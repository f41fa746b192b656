"""Conversations with their expected Qwen3 prompts, shared by the rendering tests.

Cases A-E are rendered examples of the released chat template (Qwen3 model cards), copied literally. The others were
written by hand from the template rules (the checkpoints' chat_template); the tests also
check every one against jinja2 and transformers, so a mistake here shows up as
a disagreement rather than being baked in.
"""

TOOL_TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get time",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
TOOL_WEATHER = {"type": "function", "function": {
    "name": "météo", "description": "Wetter <heute> & 天气",
    "parameters": {"type": "object", "properties": {}}}}

TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n")
TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n")
TIME_JSON = ('{"type": "function", "function": {"name": "get_time", "description": "Get time", '
             '"parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}')
WEATHER_JSON = ('{"type": "function", "function": {"name": "météo", "description": "Wetter <heute> & 天气", '
                '"parameters": {"type": "object", "properties": {}}}}')


def U(text):
    return {"role": "user", "content": text}


def A(text, **kw):
    return {"role": "assistant", "content": text, **kw}


def S(text):
    return {"role": "system", "content": text}


def T(text):
    return {"role": "tool", "content": text}


def call(name, args, wrapped=True):
    fn = {"name": name, "arguments": args}
    return {"type": "function", "function": fn} if wrapped else fn


# (name, messages, kwargs for render, expected string)
CASES = [
    ("A_user_thinking", [U("Hi")], {},
     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
    ("B_no_thinking", [U("Hi")], {"enable_thinking": False},
     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ("C_history_think_stripped",
     [S("Be brief."), U("2+2?"), A("<think>\nadd\n</think>\n\n4"), U("3+3?")], {},
     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
     "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n"),
    ("D_tools_call_response",
     [U("Time in Paris?"),
      A("", reasoning_content="need tool", tool_calls=[call("get_time", {"tz": "Europe/Paris"})]),
      T("12:00")], {"tools": [TOOL_TIME]},
     "<|im_start|>system\n" + TOOLS_HEAD + TIME_JSON + TOOLS_TAIL
     + "<|im_start|>user\nTime in Paris?<|im_end|>\n<|im_start|>assistant\n<think>\nneed tool\n</think>\n\n"
     "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"Europe/Paris\"}}\n</tool_call><|im_end|>\n"
     "<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
    ("E_final_assistant_sft", [U("Hi"), A("Hello!")], {"add_generation_prompt": False},
     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n"),
    ("system_plain", [S("You are Qwen."), U("Hi")], {},
     "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
    ("tools_with_system", [S("Sys."), U("Weather?")], {"tools": [TOOL_TIME, TOOL_WEATHER]},
     "<|im_start|>system\nSys.\n\n" + TOOLS_HEAD + TIME_JSON + "\n" + WEATHER_JSON + TOOLS_TAIL
     + "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"),
    ("empty_tools_is_no_tools", [S("Sys."), U("Hi")], {"tools": []},
     "<|im_start|>system\nSys.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
    ("history_reasoning_content_dropped",
     [U("a"), A("b", reasoning_content="think b"), U("c")], {},
     "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
     "<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"),
    ("history_inline_close_only",
     [U("a"), A("just thoughts\n</think>\n\nanswer"), U("c")], {"enable_thinking": False},
     "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nanswer<|im_end|>\n"
     "<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ("final_assistant_reasoning_kept",
     [U("q"), A("\n\nans", reasoning_content="\nr1\n")], {"add_generation_prompt": False},
     "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nr1\n</think>\n\nans<|im_end|>\n"),
    ("final_assistant_inline_think",
     [U("q"), A("<think>\nr\n</think>\n\nans")], {"add_generation_prompt": False},
     "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\nans<|im_end|>\n"),
    ("multi_step_tool_loop",
     [U("Time in Paris and Tokyo?"),
      A("", reasoning_content="first Paris", tool_calls=[call("get_time", {"tz": "Europe/Paris"})]),
      T("12:00"),
      A("Now Tokyo.", tool_calls=[call("get_time", {"tz": "Asia/Tokyo"})]),
      T("19:00")], {"tools": [TOOL_TIME]},
     "<|im_start|>system\n" + TOOLS_HEAD + TIME_JSON + TOOLS_TAIL
     + "<|im_start|>user\nTime in Paris and Tokyo?<|im_end|>\n"
     "<|im_start|>assistant\n<think>\nfirst Paris\n</think>\n\n"
     "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"Europe/Paris\"}}\n</tool_call><|im_end|>\n"
     "<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>\n"
     "<|im_start|>assistant\nNow Tokyo.\n"
     "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"Asia/Tokyo\"}}\n</tool_call><|im_end|>\n"
     "<|im_start|>user\n<tool_response>\n19:00\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
    ("parallel_calls_grouped_responses",
     [U("Both?"),
      A(None, tool_calls=[call("get_time", {"tz": "UTC"}), call("get_time", '{"tz": "CET"}', wrapped=False)]),
      T("10:00"), T("11:00")], {"tools": [TOOL_TIME]},
     "<|im_start|>system\n" + TOOLS_HEAD + TIME_JSON + TOOLS_TAIL
     + "<|im_start|>user\nBoth?<|im_end|>\n<|im_start|>assistant\n"
     "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"UTC\"}}\n</tool_call>\n"
     "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}\n</tool_call><|im_end|>\n"
     "<|im_start|>user\n<tool_response>\n10:00\n</tool_response>\n<tool_response>\n11:00\n</tool_response>"
     "<|im_end|>\n<|im_start|>assistant\n"),
    ("wrapped_tool_response_is_not_a_query",
     [U("go"), A("", reasoning_content="r", tool_calls=[call("f", {})]),
      U("<tool_response>\nok\n</tool_response>")], {},
     "<|im_start|>user\ngo<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\n"
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call><|im_end|>\n"
     "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
    ("after_query_without_reasoning_not_last",
     [U("go"), A("calling", tool_calls=[call("f", {"a": [1, 2]})]), T("done"), A("All done.")],
     {"add_generation_prompt": False},
     "<|im_start|>user\ngo<|im_end|>\n<|im_start|>assistant\ncalling\n"
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}\n</tool_call><|im_end|>\n"
     "<|im_start|>user\n<tool_response>\ndone\n</tool_response><|im_end|>\n"
     "<|im_start|>assistant\n<think>\n\n</think>\n\nAll done.<|im_end|>\n"),
    ("system_in_the_middle", [S("first"), U("a"), S("second"), U("b")], {},
     "<|im_start|>system\nfirst<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
     "<|im_start|>system\nsecond<|im_end|>\n<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n"),
    ("no_generation_prompt", [U("Hi")], {"add_generation_prompt": False},
     "<|im_start|>user\nHi<|im_end|>\n"),
    ("no_thinking_with_history", [U("a"), A("b"), U("c /no_think")], {"enable_thinking": False},
     "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
     "<|im_start|>user\nc /no_think<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ("unicode_and_newlines", [U("  你好\n\n世界 😀  "), A("\n答案\n")], {"add_generation_prompt": False},
     "<|im_start|>user\n  你好\n\n世界 😀  <|im_end|>\n"
     "<|im_start|>assistant\n<think>\n\n</think>\n\n答案\n<|im_end|>\n"),
    ("no_user_message", [S("s"), A("x", reasoning_content="r")], {"add_generation_prompt": False},
     "<|im_start|>system\ns<|im_end|>\n<|im_start|>assistant\nx<|im_end|>\n"),
    ("tool_args_unicode_not_escaped",
     [U("q"), A("", tool_calls=[call("météo", {"ville": "Zürich <&>"})])], {"add_generation_prompt": False,
                                                                          "tools": [TOOL_WEATHER]},
     "<|im_start|>system\n" + TOOLS_HEAD + WEATHER_JSON + TOOLS_TAIL
     + "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
     "<tool_call>\n{\"name\": \"météo\", \"arguments\": {\"ville\": \"Zürich <&>\"}}\n</tool_call><|im_end|>\n"),
]
