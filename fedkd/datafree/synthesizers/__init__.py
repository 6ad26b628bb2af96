"""Synthesizers: one class per data-free method, all behind :class:`Synthesizer`."""

from fedkd.datafree.synthesizers.base import Synthesizer, build_generator
from fedkd.datafree.synthesizers.cmi import CMISynthesizer
from fedkd.datafree.synthesizers.coboost import EnsembleBoosting
from fedkd.datafree.synthesizers.conditional import ConditionalSynthesizer
from fedkd.datafree.synthesizers.dafl import DAFLSynthesizer
from fedkd.datafree.synthesizers.deepinversion import DeepInversionSynthesizer
from fedkd.datafree.synthesizers.dfad import DFADSynthesizer
from fedkd.datafree.synthesizers.dfrd import DFRDSynthesizer
from fedkd.datafree.synthesizers.fast_meta import FastMetaSynthesizer
from fedkd.datafree.synthesizers.nayer import NoisyLayerSynthesizer
from fedkd.datafree.synthesizers.pool import PoolSynthesizer
from fedkd.datafree.synthesizers.rdskd import RDSKDSynthesizer
from fedkd.datafree.synthesizers.real import RealDataSource
from fedkd.datafree.synthesizers.replay import PseudoReplaySynthesizer
from fedkd.datafree.synthesizers.zskt import ZSKTSynthesizer

__all__ = [
    "CMISynthesizer", "ConditionalSynthesizer", "DAFLSynthesizer", "DeepInversionSynthesizer", "DFADSynthesizer",
    "DFRDSynthesizer", "EnsembleBoosting", "FastMetaSynthesizer", "NoisyLayerSynthesizer", "PoolSynthesizer",
    "PseudoReplaySynthesizer", "RDSKDSynthesizer", "RealDataSource", "Synthesizer", "build_generator",
    "ZSKTSynthesizer",
]
