"""The CLIGPT2 model family: config, modules, GPT-2 conversion, parameter formula.

Importing this package registers ``cli_gpt2`` with transformers' ``AutoConfig`` and
``AutoModelForCausalLM`` (it loads torch).
"""

from clidep.model import modeling  # noqa: F401  (registers the model family with the Auto classes)
