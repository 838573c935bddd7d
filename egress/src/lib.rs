//! Host-side outbound HTTP for skills (placeholder).
