"""Synthesizers: one class per data-free method, all behind :class:`Synthesizer`."""

from fedkd.datafree.synthesizers.base import Synthesizer, build_generator
from fedkd.datafree.synthesizers.cmi import CMISynthesizer
from fedkd.datafree.synthesizers.conditional import ConditionalSynthesizer
from fedkd.datafree.synthesizers.dfad import DFADSynthesizer
from fedkd.datafree.synthesizers.rdskd import RDSKDSynthesizer
from fedkd.datafree.synthesizers.real import RealDataSource

__all__ = ["CMISynthesizer", "ConditionalSynthesizer", "DFADSynthesizer", "RDSKDSynthesizer", "RealDataSource", "Synthesizer", "build_generator"]
