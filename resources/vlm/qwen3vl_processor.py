"""The real Qwen3-VL processor, minus videos.

`Qwen3VLProcessor` requires a video processor, and video processors need torchvision, which has no
CPU build on some machines. Images-only work (all of Stage-A) needs just the image processor and the
tokenizer, so this subclass declares only those two; everything else is the library's code.
"""

from transformers import Qwen3VLProcessor


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)
