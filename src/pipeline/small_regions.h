// Removal of small islands and holes (the automatic mask generator's min_mask_region_area): declared
// in the public samfast/amg.h.
#pragma once
#include "samfast/amg.h"
