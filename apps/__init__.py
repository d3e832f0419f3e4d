"""medmoe."""
