"""Ansible's linear strategy run through Mitogen (the ``mitogen`` pin of fleet/requirements.txt).

Why: each task over plain ssh starts a fresh remote python and unpacks its module (AnsiballZ):
0.36 s for a ping, 1 s for an unchanged copy, measured here with benchmarks/bench_fleet.py's
timing callback; Mitogen keeps one interpreter per host and runs modules in it (0.04 s for a
ping), so a rolling promote costs the promotes plus little more. Semantics are the linear
strategy's (serial, max_fail_percentage, any_errors_fatal, block/rescue). Without Mitogen,
run with ANSIBLE_STRATEGY=linear.
"""

from __future__ import annotations

try:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError as exc:
    from ansible.errors import AnsibleError

    raise AnsibleError(
        "the strategy mitogen_linear (fleet/ansible.cfg) needs the mitogen package: "
        "pip install -r fleet/requirements.txt, or run with ANSIBLE_STRATEGY=linear"
    ) from exc

Base = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, Base):  # type: ignore[misc,valid-type]
    pass
