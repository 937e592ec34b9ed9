"""The built-in system prompt: short, so that small models spend their context and attention on the
conversation, and asking for answers that end once the question is answered. The old web client renders
Markdown and LaTeX, so the prompt still asks for them."""

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer clearly and concisely, using Markdown where it helps and LaTeX "
    "($...$) for mathematics, and stop once the question is answered."
)
