// A bare hardhat network for the contract tests: nothing to compile, every
// transaction mined at once, the well-known dev accounts funded.
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      mining: { auto: true },
    },
  },
};
