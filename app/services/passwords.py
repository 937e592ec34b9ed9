"""bcrypt hashing for private conversations, off the event loop (a cost-10 hash takes tens of ms)."""

from __future__ import annotations

import anyio.to_thread
import bcrypt

# bcrypt only looks at the first 72 bytes; longer passwords are refused rather than silently truncated.
MAX_PASSWORD_BYTES = 72


async def hash_password(password: str, rounds: int) -> str:
    salt = bcrypt.gensalt(rounds=rounds)
    digest = await anyio.to_thread.run_sync(bcrypt.hashpw, password.encode(), salt)
    return digest.decode()


async def check_password(password: str, password_hash: str) -> bool:
    """True when `password` matches the stored bcrypt hash; a malformed stored hash never matches."""
    try:
        return await anyio.to_thread.run_sync(bcrypt.checkpw, password.encode(), password_hash.encode())
    except ValueError:
        return False
