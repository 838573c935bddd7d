//! Criterion benches for skillbox live in `benches/`; this library is empty on purpose.
