"""Operations on rollouts (promote, abort, …) as pure patches of intent."""
