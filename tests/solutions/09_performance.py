"Solutions to lesson 09's exercises, and classic mistakes the checks must catch."

def attention_map_bytes(batch, height, width, bytes_per_value):
    pixels = height * width
    return batch * pixels * pixels * bytes_per_value

def channels_last_strides(shape):
    N, C, H, W = shape
    return (C * H * W, 1, C * W, C)

SOLUTIONS = {'attention_map_bytes': attention_map_bytes, 'channels_last_strides': channels_last_strides}

WRONG = [
    ('attention_map_bytes', lambda batch, height, width, bytes_per_value: batch * height * width * bytes_per_value, 'it gives'),  # one weight a pixel, not a pair
    ('attention_map_bytes', lambda batch, height, width, bytes_per_value: (height * width) ** 2 * bytes_per_value, 'it gives'),  # the batch forgotten
    ('channels_last_strides', lambda shape: (shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1), 'in item'),    # the default (contiguous) order
    ('channels_last_strides', lambda shape: (shape[1] * shape[2] * shape[3], 1, shape[1] * shape[2], shape[1]), 'in item'),    # H and W swapped
]
