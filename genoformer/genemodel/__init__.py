"""A gene model learned from the user's annotation: a generalised HMM of eukaryotic gene structure.

Train it in seconds to a couple of minutes on a CPU from a FASTA and GFF3/GTF over training regions
(:meth:`GeneModel.fit`), store it as JSON (:meth:`GeneModel.save` / :meth:`GeneModel.load`), and call
genes with it alone, without a network (:func:`decode_with_gene_model`). Its parts:

- ``training``: one coding transcript per gene, checked against the sequence, into per-base labels;
- ``markov``: order-k chains (3-periodic coding, intron, intergenic);
- ``signals``: site models around donors, acceptors, starts and stops (weight array matrices,
  counted, or fitted against decoys);
- ``lengths``: exon (by kind) and intron length distributions;
- ``model``: the counts, fitting, and the model file;
- ``settings``: the decoder's knobs (penalties, weights), defaults or fitted on validation;
- ``pseudogenes``: a filter of calls that look like the annotation's pseudogenes and transposable elements;
- ``decode``: the scores the exact Viterbi of ``genoformer.decode.eukaryote`` adds up;
- ``fitting``: fits that decode: the pseudogene filter on the training regions, and choosing on validation
  regions (the objective, a coordinate search, the decoder's settings);
- ``evidence``: a network's per-base probabilities weighed into those scores, the weights' file and fit.
"""
from genoformer.genemodel.decode import ScoringTables, StrandEvidence, decode_with_gene_model, gene_model_transcripts
from genoformer.genemodel.evidence import EvidenceFit, EvidenceWeights, combined_evidence, fit_evidence_weights
from genoformer.genemodel.fitting import SettingsFit, fit_decode_settings, fit_pseudogene_filter
from genoformer.genemodel.model import FORMAT_VERSION, GeneModel
from genoformer.genemodel.settings import DecodeSettings

__all__ = ["DecodeSettings", "EvidenceFit", "EvidenceWeights", "FORMAT_VERSION", "GeneModel", "ScoringTables",
           "SettingsFit", "StrandEvidence", "combined_evidence", "decode_with_gene_model", "fit_decode_settings",
           "fit_evidence_weights", "fit_pseudogene_filter", "gene_model_transcripts"]
