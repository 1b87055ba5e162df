"""Answer agreement by value for eval rag JSON files written before `agreement`
meant it (v_base, v_qv, v_q here): the same digit runs in order, else the same
letters and digits; usage: python3 value_agreement.py FILE.json..."""
import json,re,sys
def norm(a):
    d=re.findall(r'\d+',a)
    return tuple(d) if d else re.sub(r'[^a-z0-9]','',a.lower())
for f in sys.argv[1:]:
    d=json.load(open(f)); full=d['modes']['full']['cells']
    for k,v in d['modes'].items():
        if k=='blend': continue
        c=v['cells']; ag=sum(norm(x['answer'])==norm(y['answer']) for x,y in zip(c,full))/len(c)
        print(f.split('/')[-1],k,'acc %.3f agree_exact %.3f agree_val %.3f kld %.4f'%(v['accuracy'],v['agreement'],ag,v['kld']))
