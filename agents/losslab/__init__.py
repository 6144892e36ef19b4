"""Preference-loss discovery (DiscoPOP, Lu et al. 2024), with DPO, IPO, SLiC, KTO, LRML and
cDPO as the built-in baselines."""

from conclave.agents.losslab.config import LossLabConfig, SyntheticConfig
from conclave.agents.losslab.fitness import Verdict, judge
from conclave.agents.losslab.losses import BUILTIN
from conclave.agents.losslab.losslab import Proposal, ProposalError, parse_proposal, run
from conclave.agents.losslab.trace import Candidate, LossLabError, LossLabResult

__all__ = ["BUILTIN", "Candidate", "LossLabConfig", "LossLabError", "LossLabResult", "Proposal", "ProposalError",
           "SyntheticConfig", "Verdict", "judge", "parse_proposal", "run"]
