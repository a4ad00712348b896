"""Settings shared by the OpenAI-compatible LLM and VLM clients (resources/llm, resources/vlm)."""


def check_client_settings(
    base_url: str,
    model: str,
    max_in_flight: int,
    timeout_s: float,
    max_retries: int,
    model_hint: str = "the model id the server serves",
) -> None:
    """Raise ValueError naming the first setting that cannot work."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    if not model:
        raise ValueError(f"model must be {model_hint}, got ''")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
