"""A toy attack written as a user would write a new one: one module, registered by one call.

The tests do not import this file as part of robench: they copy its text into a temporary folder
and import it from there (``load_toy``), as a plugin module would be, so the attack reaches
``robench attack``, the report, ``verify`` and the default Linf ensemble with no robench edit.
"""

TOY_ATTACK = '''
"""Random-sign attack: every pixel moved by +-eps at random (a weak Linf baseline)."""

import dataclasses
from dataclasses import dataclass

import torch

import robench
from robench.attacks import AttackSpec, setting_label
from robench.attacks.base import AttackOutcome


@dataclass(frozen=True)
class SignConfig:
    epsilons: tuple[float, ...] = (8 / 255,)
    tries: int = 1


def sign_attack(model, images, labels, config, generator):
    eps = config.epsilons[0]
    noise = torch.rand(images.shape, generator=generator, device=images.device)
    adversarial = (images + eps * torch.where(noise < 0.5, -1.0, 1.0)).clamp(0, 1)
    return AttackOutcome(adversarial, torch.full((len(images),), config.tries, dtype=torch.int64))


robench.register_attack(AttackSpec(
    "{name}", SignConfig, sign_attack,
    settings=lambda c: [(setting_label("linf", e), dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
    budget=lambda c: {{"linf_budget": c.epsilons[0]}},
    deterministic=False,
    threat=lambda c: ("linf", c.epsilons[0]),
    white_box=False,
    threats=("linf",),
    at_budget=lambda norm, b, o: SignConfig(epsilons=(b,), **o),
    title="Random signs{{variant}}, successes",
    default_in=("linf",),
    cost=1,
    shorthand="eps",
))
'''


def load_toy(folder, name: str = "randsign"):
    """Write the toy module into ``folder``, import it (it registers ``name``) and return it."""
    import importlib.util

    path = folder / f"toy_{name}.py"
    path.write_text(TOY_ATTACK.format(name=name))
    spec = importlib.util.spec_from_file_location(f"toy_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
