"""The edge health agent: pool peers probe each other (SWIM-style) and vote on each other's health."""
