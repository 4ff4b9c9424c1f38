"""Writers for annotations (GFF3, BED6/BED12) and per-base probability tracks (bedGraph, bigWig)."""
from genoformer.export.bed import write_bed, write_bed12
from genoformer.export.gff3 import write_gff3
from genoformer.export.tracks import open_track, write_bedgraph, write_bigwig, write_class_tracks

__all__ = ["open_track", "write_bed", "write_bed12", "write_bedgraph", "write_bigwig", "write_class_tracks", "write_gff3"]
