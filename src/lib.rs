//! Root package: owns tests/, examples/, benches/.
