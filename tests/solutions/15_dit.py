"Solutions to lesson 15's exercises, and classic mistakes the checks must catch."

def dit_attention_size(size, patch, heads):
    tokens = (size // patch) ** 2
    return (tokens, heads * tokens * tokens)

def modulate_by_hand(h, shift, scale):
    return h * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

SOLUTIONS = {'dit_attention_size': dit_attention_size, 'modulate_by_hand': modulate_by_hand}

WRONG = [
    ('dit_attention_size', lambda size, patch, heads: (size // patch, heads * (size // patch) ** 2), 'in item 0'),   # a row of patches, not the grid
    ('dit_attention_size', lambda size, patch, heads: ((size // patch) ** 2, (size // patch) ** 4), 'in item 1'),   # one head
    ('modulate_by_hand', lambda h, shift, scale: h * scale.unsqueeze(1) + shift.unsqueeze(1), 'at index'),          # γ alone: zero wipes h out
    ('modulate_by_hand', lambda h, shift, scale: h * (1 + shift.unsqueeze(1)) + scale.unsqueeze(1), 'at index'),    # β and γ swapped
]
