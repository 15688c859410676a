//! The skills shipped in the binary.

/// `(file, TOML text)` of every built-in skill.
pub const FILES: &[(&str, &str)] = &[
    (
        "automation-opportunity-finder.toml",
        include_str!("../skills/automation-opportunity-finder.toml"),
    ),
    (
        "business-model-extractor.toml",
        include_str!("../skills/business-model-extractor.toml"),
    ),
    (
        "competitor-intelligence.toml",
        include_str!("../skills/competitor-intelligence.toml"),
    ),
    (
        "crew-supervisor.toml",
        include_str!("../skills/crew-supervisor.toml"),
    ),
    (
        "crew-worker.toml",
        include_str!("../skills/crew-worker.toml"),
    ),
    (
        "customer-insight-miner.toml",
        include_str!("../skills/customer-insight-miner.toml"),
    ),
    (
        "digital-footprint-scanner.toml",
        include_str!("../skills/digital-footprint-scanner.toml"),
    ),
    (
        "financial-intelligence.toml",
        include_str!("../skills/financial-intelligence.toml"),
    ),
    (
        "implementation-blueprint.toml",
        include_str!("../skills/implementation-blueprint.toml"),
    ),
    (
        "legal-compliance-scanner.toml",
        include_str!("../skills/legal-compliance-scanner.toml"),
    ),
    (
        "monitoring-optimization.toml",
        include_str!("../skills/monitoring-optimization.toml"),
    ),
    (
        "session-summary.toml",
        include_str!("../skills/session-summary.toml"),
    ),
    ("smart-goal.toml", include_str!("../skills/smart-goal.toml")),
    (
        "swot-analysis.toml",
        include_str!("../skills/swot-analysis.toml"),
    ),
    (
        "tech-stack-auditor.toml",
        include_str!("../skills/tech-stack-auditor.toml"),
    ),
    (
        "transformation-change-management.toml",
        include_str!("../skills/transformation-change-management.toml"),
    ),
    (
        "weekly-action-plan.toml",
        include_str!("../skills/weekly-action-plan.toml"),
    ),
];

/// The business-intelligence skills an analysis runs (seed 001's list and a SWOT synthesis).
pub const BUSINESS_INTELLIGENCE: &[&str] = &[
    "digital-footprint-scanner",
    "business-model-extractor",
    "automation-opportunity-finder",
    "competitor-intelligence",
    "customer-insight-miner",
    "tech-stack-auditor",
    "financial-intelligence",
    "legal-compliance-scanner",
    "implementation-blueprint",
    "monitoring-optimization",
    "transformation-change-management",
    "swot-analysis",
];
