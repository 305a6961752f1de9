"""fp8 training through torchao's float8 training (``torchao.float8.convert_to_float8_training``).

On a GPU with fp8 tensor cores (compute capability 8.9 or more: Ada, Hopper, Blackwell) the model's linear layers
become torchao ``Float8Linear`` layers: weights, activations and gradients are cast to fp8 (e4m3) with dynamic
scales just before each matmul, everything else stays bf16 (master weights fp32 under FSDP). Two of torchao's
recipes (``Float8LinearConfig.from_recipe_name``): ``tensorwise`` (one scale per tensor) and ``rowwise`` (one
scale per row, rounded to a power of two). The output projection and the MoE router stay bf16 (as torchtitan
leaves the output layer), and so do layers whose dimensions are not multiples of 16 (an fp8 matmul needs them)
and the grouped experts, which are not ``nn.Linear``.

Elsewhere (CPU, or a GPU without fp8) an fp8 run trains in bf16 and says so in one line. torchao is imported only
when fp8 is used on a capable GPU.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import UserError

RECIPES = ("tensorwise", "rowwise")
DEFAULT_RECIPE = "tensorwise"  # torchao's default recipe
MIN_CAPABILITY = (8, 9)        # first NVIDIA architecture with fp8 tensor cores (Ada Lovelace, sm_89)


def check_recipe(recipe: str | None) -> str:
    """The recipe to use (``tensorwise`` when none is given); one line for an unknown one."""
    if recipe is None:
        return DEFAULT_RECIPE
    if recipe not in RECIPES:
        raise UserError(f"fp8 recipe {recipe!r} is not one the runtime runs (torchao float8: "
                        f"{', '.join(RECIPES)}); pass --fp8-recipe tensorwise or rowwise")
    return recipe


def fp8_unavailable(device) -> str | None:
    """Why ``device`` cannot train in fp8 (None when it can): CPU, or a GPU below compute capability 8.9."""
    if device.type != "cuda":
        return f"this device ({device.type}) has no fp8 matmuls"
    import torch

    cc = torch.cuda.get_device_capability(device)
    if tuple(cc) < MIN_CAPABILITY:
        return (f"{torch.cuda.get_device_name(device)} (compute capability {cc[0]}.{cc[1]}) has no fp8 tensor "
                f"cores (needs {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or more)")
    return None


def resolve(cfg, device):
    """``(config to train with, line to print or None)``. An fp8 config stays fp8 on a capable GPU (its recipe
    filled in); elsewhere it becomes bf16, and the line says so."""
    if cfg.precision != "fp8":
        return cfg, None
    recipe = check_recipe(cfg.fp8_recipe)
    why = fp8_unavailable(device)
    if why is None and cfg.layout.tp > 1:
        why = "fp8 with tensor parallelism (torchao's float8 TP styles) is not wired into the runtime"
    if why is not None:
        return replace(cfg, precision="bf16", fp8_recipe=None), f"fp8 plan: {why}; training in bf16 instead"
    return replace(cfg, fp8_recipe=recipe), f"fp8 training: torchao float8, {recipe} scaling"


def _eligible(module, fqn: str) -> bool:
    """torchao's filter: which ``nn.Linear`` layers go fp8."""
    from torch import nn

    return (isinstance(module, nn.Linear) and fqn.split(".")[-1] not in ("output", "router")
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def apply(model, recipe: str) -> int:
    """Swap the eligible linear layers of ``model`` for torchao ``Float8Linear`` with ``recipe``'s config; returns
    how many were swapped. Call before tensor parallelism, checkpointing and FSDP (torchtitan's order)."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    n = sum(1 for fqn, m in model.named_modules() if _eligible(m, fqn))
    convert_to_float8_training(model, module_filter_fn=_eligible, config=Float8LinearConfig.from_recipe_name(recipe))
    return n
