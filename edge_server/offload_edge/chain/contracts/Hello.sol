// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Hello: the demo contract the original project greeted with.
contract Hello {
    string private greeting = "Hello, world!";

    event GreetingChanged(address indexed by, string greeting);

    /// @notice The current greeting.
    function hello() external view returns (string memory) {
        return greeting;
    }

    /// @notice "Hello, <name>!"
    function greet(string calldata name) external pure returns (string memory) {
        return string.concat("Hello, ", name, "!");
    }

    /// @notice Replace the greeting returned by hello().
    function setGreeting(string calldata newGreeting) external {
        require(bytes(newGreeting).length > 0, "Hello: greeting must not be empty");
        greeting = newGreeting;
        emit GreetingChanged(msg.sender, newGreeting);
    }
}
