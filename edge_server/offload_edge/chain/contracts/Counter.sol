// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Counter: a state-changing demo contract with events and reverts.
contract Counter {
    uint256 private value;

    event Incremented(address indexed by, uint256 value);
    event Decremented(address indexed by, uint256 value);

    function get() external view returns (uint256) {
        return value;
    }

    function increment() external {
        value += 1;
        emit Incremented(msg.sender, value);
    }

    function incrementBy(uint256 amount) external {
        require(amount > 0, "Counter: amount must be positive");
        value += amount;
        emit Incremented(msg.sender, value);
    }

    function decrement() external {
        require(value > 0, "Counter: cannot go below zero");
        value -= 1;
        emit Decremented(msg.sender, value);
    }
}
