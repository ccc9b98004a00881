"""Signing, chaining and verification of uplink batches; signed downlink commands.

The security core of issue 5 (docs/security.md). Module map:

* :mod:`~cityedge.signing.algorithms`: Ed25519 and hybrid Ed25519 + ML-DSA-65
  keys, key ids, signature checks (pure apart from the crypto calls).
* :mod:`~cityedge.signing.envelope`: batch payload v2 and rotation statements,
  byte layouts (pure).
* :mod:`~cityedge.signing.chain`: the per-gateway hash chain as a pure step
  function and :class:`~cityedge.signing.chain.BatchSealer`.
* :mod:`~cityedge.signing.protocol`: the signer's wire protocol (pure).
* :mod:`~cityedge.signing.keys`: key generation, sealing at rest, rotation,
  CSR (the ``cityedge keys`` commands).
* :mod:`~cityedge.signing.signer_server` / :mod:`~cityedge.signing.signer_client`:
  the signer daemon and its clients.
* :mod:`~cityedge.signing.pkcs11_backend`: keys that never leave a PKCS#11 token.
* :mod:`~cityedge.signing.verify`: the hub-side verifier.
* :mod:`~cityedge.signing.downlink`: signed commands from the city's authority.
"""
